"""The relidar_ros package as a ROS user gets it: `colcon build`, `colcon test` and `colcon test-result`
pass in a fresh workspace; the console script runs on the Python that built it (the one with relidar);
the launch files, config, schema and RViz config are installed, and everything the launch files name
exists in the install space. `launch`, `launch_ros` and the `ros2` CLI have no wheels here, so the
launch files are parsed (ast), never imported; the README's `ros2 launch` lines are checked the same way.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "relidar_ros"
ROS_PACKAGES = {"rclpy", "sensor_msgs", "std_msgs", "visualization_msgs", "diagnostic_msgs", "rcl_interfaces",
                "ament_index_python", "geometry_msgs", "builtin_interfaces", "rosgraph_msgs", "launch", "launch_ros"}
HAS_COLCON = subprocess.run([sys.executable, "-c", "import colcon_core"], capture_output=True).returncode == 0


def _package_xml() -> ET.Element:
    return ET.parse(PKG / "package.xml").getroot()


def _depends(kind: str) -> set[str]:
    return {e.text for e in _package_xml() if e.tag in (kind, "depend")}


def _schema_parameters() -> set[str]:
    doc = json.loads((PKG / "schema" / "segmenter.schema.json").read_text())
    return set(doc["definitions"]["segmenter"]["properties"])


def _setup_kwargs() -> dict[str, ast.expr]:
    tree = ast.parse((PKG / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords if k.arg}


def test_package_xml_and_setup_py_agree() -> None:
    xml = _package_xml()
    consts = {k: v.value for k, v in _setup_kwargs().items() if isinstance(v, ast.Constant)}
    assert xml.findtext("name") == "relidar_ros"
    assert xml.findtext("version") == consts["version"]
    assert xml.findtext("license") == consts["license"]
    assert xml.find("export/build_type").text == "ament_python"
    assert (PKG / "resource" / "relidar_ros").is_file()
    assert "script_dir=$base/lib/relidar_ros" in (PKG / "setup.cfg").read_text()
    assert "f'segmenter = {PACKAGE}.segmenter_node:main'" in (PKG / "setup.py").read_text()


def test_package_xml_declares_every_ros_import() -> None:
    """Every ROS package the node's modules and the launch files import is an exec_depend."""
    imported = set()
    for py in list((PKG / "relidar_ros").glob("*.py")) + list((PKG / "launch").glob("*.launch.py")):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
    used = imported & ROS_PACKAGES
    assert {"rclpy", "sensor_msgs", "launch", "launch_ros", "rosgraph_msgs"} <= used
    assert used <= _depends("exec_depend"), f"missing exec_depend: {sorted(used - _depends('exec_depend'))}"


# -- the launch files, parsed ------------------------------------------------------------------------------
class LaunchFile:
    """What a launch file names, read from its syntax tree (it cannot be imported here)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text())
        self.declared: set[str] = set()
        self.used: set[str] = set()
        self.nodes: list[dict[str, ast.expr]] = []
        self.share_paths: list[str] = []
        self.strings = {n.value for n in ast.walk(self.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for call in (n for n in ast.walk(self.tree) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            first = call.args[0] if call.args else None
            if name == "DeclareLaunchArgument":
                self.declared.add(ast.literal_eval(first))
            elif name == "LaunchConfiguration":
                self.used.add(ast.literal_eval(first))
            elif name == "Node":
                self.nodes.append({k.arg: k.value for k in call.keywords})
            elif name == "PathJoinSubstitution":
                parts = first.elts
                assert isinstance(parts[0], ast.Name) and parts[0].id == "share", ast.unparse(call)
                self.share_paths.append("/".join(ast.literal_eval(p) for p in parts[1:]))

    def parameter_names(self) -> set[str]:
        names = set()
        for node in self.nodes:
            for item in getattr(node.get("parameters"), "elts", []):
                if isinstance(item, ast.Dict):
                    names.update(ast.literal_eval(k) for k in item.keys)
        return names

    def include_arguments(self) -> dict[str, set[str]]:
        """Launch arguments passed to each included launch file (by file name)."""
        out = {}
        for call in (n for n in ast.walk(self.tree) if isinstance(n, ast.Call)):
            if getattr(call.func, "id", "") != "IncludeLaunchDescription":
                continue
            source = ast.unparse(call.args[0])
            target = re.findall(r"'([\w.]+\.launch\.py)'", source)[0]
            args = next(k.value for k in call.keywords if k.arg == "launch_arguments")
            out[target] = {ast.literal_eval(k) for k in args.func.value.keys}
        return out


LAUNCH_FILES = ("segmenter.launch.py", "replay.launch.py")


@pytest.fixture(scope="module")
def launch_files() -> dict[str, LaunchFile]:
    assert sorted(p.name for p in (PKG / "launch").glob("*.launch.py")) == sorted(LAUNCH_FILES)
    assert not (REPO / "launch").exists(), "launch files live in the package (ros2_ws/src/relidar_ros/launch)"
    return {name: LaunchFile(PKG / "launch" / name) for name in LAUNCH_FILES}


def test_launch_arguments_are_declared_and_used(launch_files: dict[str, LaunchFile]) -> None:
    for name, lf in launch_files.items():
        compile(lf.path.read_text(), str(lf.path), "exec")
        assert lf.used <= lf.declared, f"{name}: undeclared {sorted(lf.used - lf.declared)}"
        assert lf.declared <= lf.used | {"bag"}, f"{name}: unused {sorted(lf.declared - lf.used)}"
    assert {"bundle", "input"} <= launch_files["segmenter.launch.py"].declared
    assert {"bag", "bundle", "loop", "fixed_frame", "rviz", "start_paused", "clock", "rate", "player"} \
        <= launch_files["replay.launch.py"].declared
    included = launch_files["replay.launch.py"].include_arguments()
    assert included["segmenter.launch.py"] <= launch_files["segmenter.launch.py"].declared


def test_launch_files_use_node_parameters_and_topics_that_exist(launch_files: dict[str, LaunchFile]) -> None:
    allowed = _schema_parameters() | {"use_sim_time"}
    for name, lf in launch_files.items():
        assert lf.parameter_names() <= allowed, f"{name}: {sorted(lf.parameter_names() - allowed)}"
    seg = launch_files["segmenter.launch.py"]
    assert seg.parameter_names() == {"bundle", "use_sim_time"}
    node_source = (PKG / "relidar_ros" / "segmenter_node.py").read_text()
    assert "'~/input/points'" in node_source and "~/input/points" in seg.strings
    # The replay launch plays with `ros2 bag play` or `relidar replay`, with options both have.
    replay = launch_files["replay.launch.py"]
    assert {"ros2", "bag", "play", "relidar", "replay", "--rate", "--loop", "--clock", "--start-paused"} <= replay.strings
    cli = (REPO / "relidar" / "cli" / "replay.py").read_text()
    for option in ("--rate", "--loop", "--clock", "--start-paused"):
        assert f'"{option}"' in cli, f"`relidar replay` has no {option}"
    assert "replay = " not in (PKG / "setup.py").read_text()  # the relidar CLI is the fallback player
    from relidar.cli.app import COMMAND_MODULES

    assert "relidar.cli.replay" in COMMAND_MODULES
    assert "rviz2" in _depends("exec_depend") and "ros2bag" in _depends("exec_depend")


def test_readme_ros2_launch_lines_name_real_files_and_arguments(launch_files: dict[str, LaunchFile]) -> None:
    readme = (REPO / "README.md").read_text()
    lines = re.findall(r"ros2 launch relidar_ros (\S+)((?: [\w]+:=\S+| \\\n\s+| \[[^\]]*\])*)", readme)
    assert {f for f, _ in lines} == set(LAUNCH_FILES)
    for file, args in lines:
        names = set(re.findall(r"(\w+):=", args))
        assert names <= launch_files[file].declared, f"README: {file} has no {sorted(names - launch_files[file].declared)}"


# -- RViz, Fast DDS, params ---------------------------------------------------------------------------------
def test_rviz_config_shows_labels_legend_and_scores() -> None:
    cfg = yaml.safe_load((PKG / "rviz" / "relidar.rviz").read_text())
    manager = cfg["Visualization Manager"]
    displays = {d["Name"]: d for d in manager["Displays"]}
    labels, scores, legend = displays["Labelled points"], displays["Scores"], displays["Class legend"]
    assert labels["Class"] == scores["Class"] == "rviz_default_plugins/PointCloud2"
    assert labels["Topic"]["Value"] == scores["Topic"]["Value"] == "/segmenter/output/points"
    assert labels["Color Transformer"] == "RGB8"  # the node's rgb field: colours by class
    assert scores["Color Transformer"] == "Intensity" and scores["Channel Name"] == "score"
    assert scores["Use rainbow"] is True and (scores["Min Intensity"], scores["Max Intensity"]) == (0, 1)
    assert scores["Autocompute Intensity Bounds"] is False
    assert legend["Class"] == "rviz_default_plugins/MarkerArray"
    assert legend["Topic"]["Value"] == "/segmenter/output/legend"
    assert legend["Topic"]["Durability Policy"] == "Transient Local"
    # The fixed frame defaults to the synthetic bags' lidar frame; the replay launch sets it.
    assert manager["Global Options"]["Fixed Frame"] == "lidar"
    from relidar.synthetic.writers import LIDAR_FRAME

    assert LIDAR_FRAME == "lidar"


def test_fastdds_profile_has_a_large_segment() -> None:
    root = ET.parse(PKG / "config" / "fastdds_shm.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    seg = root.find(".//d:transport_descriptor[d:type='SHM']/d:segment_size", ns)
    assert seg is not None and int(seg.text) >= 16 * 2**20
    assert root.find(".//d:participant[@is_default_profile='true']", ns) is not None


# -- colcon, in a fresh workspace ------------------------------------------------------------------------
def _colcon(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """colcon run by this Python (`python -m colcon`): the Python that has relidar builds and tests."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    return subprocess.run([sys.executable, "-m", "colcon", "--log-base", str(cwd / "log"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh colcon workspace with relidar_ros in src/ (a copy: nothing of the checkout is written)."""
    if not HAS_COLCON:
        pytest.skip("colcon (colcon-common-extensions) is not installed in this Python")
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(PKG, ws / "src" / "relidar_ros", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = _colcon("build", cwd=ws)
    assert built.returncode == 0, built.stdout + built.stderr
    return ws


def _installed_env(ws: Path) -> dict[str, str]:
    """What `source install/setup.bash` gives a shell, for this package (no other PYTHONPATH)."""
    share = ws / "install" / "relidar_ros"
    site = next((share / "lib").glob("python3*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTDDS_DEFAULT_PROFILES_FILE")}
    env.update(PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(share), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(1 + os.getpid() % 200))
    return env


@pytest.mark.slow
def test_colcon_installs_launch_config_schema_and_rviz(workspace: Path) -> None:
    share = workspace / "install" / "relidar_ros" / "share" / "relidar_ros"
    for f in ("package.xml", "launch/segmenter.launch.py", "launch/replay.launch.py", "config/params.yaml",
              "config/model.yaml", "config/fastdds_shm.xml", "schema/segmenter.schema.json", "rviz/relidar.rviz"):
        assert (share / f).is_file(), f
    index = workspace / "install" / "relidar_ros" / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "relidar_ros").is_file()


@pytest.mark.slow
def test_launch_files_name_what_the_install_space_has(workspace: Path) -> None:
    prefix = workspace / "install" / "relidar_ros"
    share = prefix / "share" / "relidar_ros"
    for name in LAUNCH_FILES:
        lf = LaunchFile(share / "launch" / name)
        for rel in lf.share_paths:
            assert (share / rel).is_file(), f"{name}: {rel} is not installed"
        for node in lf.nodes:
            package, executable = ast.literal_eval(node["package"]), ast.literal_eval(node["executable"])
            if package == "relidar_ros":
                exe = prefix / "lib" / "relidar_ros" / executable
                assert exe.is_file() and os.access(exe, os.X_OK), f"{name}: {exe} is not installed"
            else:
                assert package in _depends("exec_depend"), f"{name}: {package} is not an exec_depend"


@pytest.mark.slow
def test_console_script_runs_on_the_building_python(workspace: Path, tmp_path: Path) -> None:
    """The installed `segmenter` has this Python's shebang (the one with relidar) and runs from the
    install space alone: --help, and a start without a bundle is one FATAL line, exit 1."""
    exe = workspace / "install" / "relidar_ros" / "lib" / "relidar_ros" / "segmenter"
    assert exe.read_text().splitlines()[0] == f"#!{sys.executable}"
    env = _installed_env(workspace)
    where = subprocess.run([sys.executable, "-c", "import relidar_ros.parameters as p; print(p.__file__, p.schema_path())"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    module, schema = where.stdout.split()
    assert Path(module).is_relative_to(workspace / "install"), "relidar_ros came from outside the install space"
    assert Path(schema).is_relative_to(workspace / "install")
    helped = subprocess.run([str(exe), "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "bundle" in helped.stdout and "score_threshold" in helped.stdout
    started = subprocess.run([str(exe), "--ros-args", "-p", f"bundle:={tmp_path / 'no_bundle'}"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    out = started.stdout + started.stderr
    assert started.returncode == 1
    assert [line for line in out.splitlines() if "[FATAL]" in line and "does not exist" in line]
    assert "Traceback" not in out


@pytest.mark.slow
def test_colcon_test_and_test_result_pass(workspace: Path) -> None:
    tested = _colcon("test", "--event-handlers", "console_direct-", cwd=workspace)
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-3000:]
    result = _colcon("test-result", "--all", "--verbose", cwd=workspace)
    summary = re.search(r"Summary: (\d+) tests?, (\d+) errors?, (\d+) failures?, (\d+) skipped", result.stdout)
    assert result.returncode == 0 and summary, result.stdout
    tests, errors, failures, _ = map(int, summary.groups())
    assert tests >= 30 and errors == failures == 0, result.stdout
    names = "\n".join(p.read_text() for p in (workspace / "build").rglob("pytest.xml"))
    for linter in ("test_flake8", "test_pep257", "test_copyright", "test_package_xml_is_a_valid_format_3_manifest"):
        assert linter in names


# -- Docker (no engine here: the files are checked) ---------------------------------------------------------
def _dockerfile_runs(text: str) -> list[str]:
    """The RUN instructions, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def test_docker_files_copy_what_exists() -> None:
    docker = REPO / "docker"
    for name in ("vehicle.Dockerfile", "train.Dockerfile"):
        text = (docker / name).read_text()
        copies = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
        assert copies, name
        for sources in copies:
            for src in sources:
                assert (REPO / src.rstrip("/")).exists(), f"{name}: COPY {src} does not exist"
        assert "requirements.txt" in text


def test_vehicle_image_builds_the_package_with_the_python_that_has_relidar() -> None:
    """The console script's shebang is the Python colcon runs on: the image must run colcon with the
    virtual environment's Python (the one relidar is pip-installed into), not apt's /usr/bin/python3."""
    text = (REPO / "docker" / "vehicle.Dockerfile").read_text()
    venv = re.search(r"python3 -m venv --system-site-packages (\S+)", text)
    assert venv, "the image makes a venv that sees apt's ROS Python packages"
    python = f"{venv.group(1)}/bin/python"
    runs = _dockerfile_runs(text)
    installs = [r for r in runs if re.search(rf"{re.escape(python)} -m pip install .*--no-deps \.(\s|$)", r)]
    assert installs, "relidar is pip-installed into the venv"
    builds = [r for r in runs if re.search(r"\bcolcon( --\S+ \S+)* build", r)]
    assert len(builds) == 1
    build = builds[0]
    assert re.search(rf"{re.escape(python)} -m colcon\b.* build", build), build
    assert not re.search(r"(^|[;&|]\s*)colcon ", build), "apt's colcon (/usr/bin/python3) would give the wrong shebang"
    assert build.index("setup.sh") < build.index("-m colcon")  # ROS sourced first (rclpy, ament)
    assert runs.index(installs[0]) <= runs.index(build)
    # The image checks its own result: the installed script's shebang is the venv's Python.
    assert f"head -1 /opt/relidar_ws/install/lib/relidar_ros/segmenter | grep -qx '#!{python}'" in text
    assert "rosdep" in text or "ros-${ROS_DISTRO}-ros2bag" in text
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    assert {"node", "replay", "rviz"} <= set(compose["services"])
    assert (REPO / compose["services"]["node"]["build"]["dockerfile"]).is_file()
    node_cmd = compose["services"]["node"]["command"]
    assert node_cmd[:4] == ["ros2", "launch", "relidar_ros", "segmenter.launch.py"]
    assert "fastdds_shm.xml" in text
