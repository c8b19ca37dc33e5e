"""The relidar_ros package: it builds with colcon and its executable runs from the install space;
package.xml, setup.py, config files, launch files and the RViz config agree with each other and with
the node's declared parameters and topics (`launch` and `ros2` are not installable here: checked
statically)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ros2_ws" / "src" / "relidar_ros"
LAUNCH = REPO / "launch"


def _setup_kwargs() -> dict[str, ast.expr]:
    tree = ast.parse((PKG / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords if k.arg}


def _package_xml() -> ET.Element:
    return ET.parse(PKG / "package.xml").getroot()


def _node_module(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
    monkeypatch.syspath_prepend(str(PKG))
    import importlib

    return importlib.import_module("relidar_ros.segmenter_node")


def test_package_xml_and_setup_py_agree() -> None:
    xml = _package_xml()
    kw = _setup_kwargs()
    consts = {k: ast.literal_eval(v) for k, v in kw.items() if isinstance(v, ast.Constant)}
    tree = ast.parse((PKG / "setup.py").read_text())
    package_const = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                         and getattr(n.targets[0], "id", "") == "PACKAGE")
    assert xml.findtext("name") == package_const == "relidar_ros"
    assert xml.findtext("version") == consts["version"]
    assert xml.findtext("license") == consts["license"]
    assert xml.find("export/build_type").text == "ament_python"
    assert (PKG / "resource" / package_const).is_file()
    assert (PKG / package_const / "__init__.py").is_file()
    assert "script_dir=$base/lib/relidar_ros" in (PKG / "setup.cfg").read_text()
    assert 'f"segmenter = {PACKAGE}.segmenter_node:main"' in (PKG / "setup.py").read_text()


def test_package_xml_declares_every_ros_import() -> None:
    """Every ROS package the node's modules import is an exec_depend of package.xml."""
    ros_packages = {"rclpy", "sensor_msgs", "std_msgs", "visualization_msgs", "diagnostic_msgs",
                    "rcl_interfaces", "ament_index_python", "geometry_msgs", "builtin_interfaces"}
    deps = {e.text for e in _package_xml() if e.tag in ("exec_depend", "depend")}
    imported = set()
    for py in (PKG / "relidar_ros").glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
    used = imported & ros_packages
    assert {"rclpy", "sensor_msgs"} <= used
    assert used <= deps, f"missing exec_depend: {sorted(used - deps)}"


def test_config_files_name_declared_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _node_module(monkeypatch)
    declared = {p.name for p in mod.PARAMS} | {"classes"}
    for name in ("params.yaml", "model.yaml"):
        doc = yaml.safe_load((PKG / "config" / name).read_text())
        params = doc["/**"]["ros__parameters"]
        assert params and set(params) <= declared, f"{name}: {sorted(set(params) - declared)} not declared by the node"
    for spec in mod.PARAMS:
        d = spec.descriptor()
        assert d.description, spec.name
        if isinstance(spec.default, float) and spec.name != "bundle":
            assert d.floating_point_range, f"{spec.name} has no range"
    # Node parameters and model parameters are kept apart (Autoware-style).
    model = yaml.safe_load((PKG / "config" / "model.yaml").read_text())["/**"]["ros__parameters"]
    node = yaml.safe_load((PKG / "config" / "params.yaml").read_text())["/**"]["ros__parameters"]
    assert not set(model) & set(node)


def _launch_strings(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_launch_files_reference_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    node_launch = _launch_strings(LAUNCH / "relidar_node.launch.py")
    replay_launch = _launch_strings(LAUNCH / "relidar_replay.launch.py")
    assert {"relidar_ros", "segmenter", "~/input/points", "params.yaml", "model.yaml", "fastdds_shm.xml",
            "FASTDDS_DEFAULT_PROFILES_FILE", "bundle", "input_topic"} <= node_launch
    for f in ("params.yaml", "model.yaml", "fastdds_shm.xml"):
        assert (PKG / "config" / f).is_file()
    assert {"relidar_node.launch.py", "relidar", "replay", "--rate", "--loop", "rviz2", "relidar.rviz", "bag"} <= replay_launch
    assert (PKG / "rviz" / "relidar.rviz").is_file()
    assert (LAUNCH / "relidar_node.launch.py").is_file()
    # The launched executable is the package's console script; the replay command is registered.
    assert 'f"segmenter = {PACKAGE}.segmenter_node:main"' in (PKG / "setup.py").read_text()
    from relidar.cli.app import COMMAND_MODULES

    assert "relidar.cli.replay" in COMMAND_MODULES
    # Every launch argument the node launch passes as a parameter is one the node declares.
    mod = _node_module(monkeypatch)
    assert "bundle" in {p.name for p in mod.PARAMS}
    for path in LAUNCH.glob("*.launch.py"):
        compile(path.read_text(), str(path), "exec")


def test_rviz_config_shows_the_node_topics() -> None:
    cfg = yaml.safe_load((PKG / "rviz" / "relidar.rviz").read_text())
    displays = {d["Class"]: d for d in cfg["Visualization Manager"]["Displays"]}
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/segmenter/output/points"
    assert cloud["Color Transformer"] == "RGB8"
    legend = displays["rviz_default_plugins/MarkerArray"]
    assert legend["Topic"]["Value"] == "/segmenter/output/legend"
    assert legend["Topic"]["Durability Policy"] == "Transient Local"


def test_fastdds_profile_is_valid_xml_with_large_segment() -> None:
    root = ET.parse(PKG / "config" / "fastdds_shm.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    seg = root.find(".//d:transport_descriptor[d:type='SHM']/d:segment_size", ns)
    assert seg is not None and int(seg.text) >= 16 * 2**20
    assert root.find(".//d:participant[@is_default_profile='true']", ns) is not None


@pytest.mark.skipif(shutil.which("colcon", path=str(Path(sys.executable).parent)) is None,
                    reason="colcon (colcon-common-extensions) is not installed beside this Python")
def test_colcon_build_and_run_from_install_space(tmp_path: Path) -> None:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    install = tmp_path / "install"
    subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(PKG.parent),
         "--build-base", str(tmp_path / "build"), "--install-base", str(install), "--merge-install"],
        cwd=tmp_path, check=True, capture_output=True, timeout=240,
    )
    exe = install / "lib" / "relidar_ros" / "segmenter"
    assert exe.is_file() and os.access(exe, os.X_OK)
    for f in ("config/params.yaml", "config/model.yaml", "config/fastdds_shm.xml", "rviz/relidar.rviz", "package.xml"):
        assert (install / "share" / "relidar_ros" / f).is_file(), f
    site = next((install / "lib").glob("python3*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTDDS_DEFAULT_PROFILES_FILE")}
    env.update(PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(install), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    helped = subprocess.run([str(exe), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "bundle" in helped.stdout and "score_threshold" in helped.stdout
    # Started with no bundle: one fatal line, non-zero exit, no traceback.
    started = subprocess.run([str(exe), "--ros-args", "-p", f"bundle:={tmp_path / 'no_bundle'}"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert "does not exist" in started.stderr + started.stdout
    assert "Traceback" not in started.stderr + started.stdout


def test_docker_files_copy_what_exists() -> None:
    """No Docker engine here: the images' COPY sources, the compose file's build and mounts exist."""
    docker = REPO / "docker"
    for name in ("vehicle.Dockerfile", "train.Dockerfile"):
        text = (docker / name).read_text()
        copies = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
        assert copies, name
        for sources in copies:
            for src in sources:
                assert (REPO / src.rstrip("/")).exists(), f"{name}: COPY {src} does not exist"
        assert "requirements.txt" in text
    vehicle = (docker / "vehicle.Dockerfile").read_text()
    assert "onnxruntime-gpu" in vehicle and "tensorrt" in vehicle and "colcon" in vehicle
    assert "fastdds_shm.xml" in vehicle
    compose = yaml.safe_load((docker / "compose.yaml").read_text())
    assert {"node", "replay", "rviz"} <= set(compose["services"])
    assert (REPO / compose["services"]["node"]["build"]["dockerfile"]).is_file()
    for volume in compose["services"]["rviz"]["volumes"]:
        src = volume.split(":")[0]
        if src.startswith(".."):
            assert (docker / src).resolve().exists(), volume
    assert "/opt/relidar/launch/relidar_node.launch.py" in compose["services"]["node"]["command"]
