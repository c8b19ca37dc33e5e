# Copyright 2026 relidar maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Where the ROS 2 side of relidar lives, and the environment its processes run in.

No rclpy import here: the replay/bench commands and the tests use this to start the node as a
subprocess with the shipped Fast DDS profile, on a chosen domain, with discovery kept on this
machine.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'


def ros_package_source() -> Path:
    """Return the folder this package was imported from (the source tree holds config/ there)."""
    return Path(__file__).resolve().parents[1]


def package_file(relative: str) -> Path | None:
    """
    Return a file of the package (``config/...``, ``schema/...``), or None where it is missing.

    It comes from the installed relidar_ros share (ament index) when there is one, else from the
    source tree.
    """
    try:
        from ament_index_python.packages import get_package_share_directory, PackageNotFoundError
    except ImportError:
        share = None
    else:
        try:
            share = Path(get_package_share_directory('relidar_ros'))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            share = None
    for root in ([share] if share else []) + [ros_package_source()]:
        if (root / relative).is_file():
            return root / relative
    return None


def default_fastdds_profile() -> Path | None:
    """Return the shipped Fast DDS profile (32 MB shared-memory segment for 1-4 MB clouds)."""
    return package_file('config/fastdds_shm.xml')


def use_default_fastdds_profile() -> None:
    """
    Point Fast DDS at the shipped profile unless the user chose one.

    Call it before ``rclpy.init`` (the profile is read when the first participant is created),
    and only in a command's own process.
    """
    profile = default_fastdds_profile()
    if PROFILE_ENV not in os.environ and profile is not None:
        os.environ[PROFILE_ENV] = str(profile)


def ros_subprocess_env(domain_id: int | None = None,
                       base: dict[str, str] | None = None) -> dict[str, str]:
    """
    Return the environment for a ROS process started by relidar.

    It has the shipped profile, an optional domain with discovery on this machine only, and the
    source-tree relidar_ros importable.
    """
    env = dict(os.environ if base is None else base)
    profile = default_fastdds_profile()
    if profile is not None:
        env.setdefault(PROFILE_ENV, str(profile))
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    src = str(ros_package_source())
    env['PYTHONPATH'] = os.pathsep.join(p for p in (src, env.get('PYTHONPATH', '')) if p)
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


def segmenter_command(
    bundle: str | Path, *params: str, input_topic: str | None = None, python: str | None = None
) -> list[str]:
    """
    Return the segmenter node's command line.

    It has ``bundle``, extra ``NAME:=VALUE`` parameters and ``~/input/points`` remapped to
    ``input_topic``, and runs the package's module with this Python (the relidar_ros source tree
    is put on PYTHONPATH by :func:`ros_subprocess_env`), so it works without ``colcon build``.
    """
    cmd = [python or sys.executable, '-m', 'relidar_ros.segmenter_node', '--ros-args',
           '-p', f'bundle:={bundle}']
    for p in params:
        cmd += ['-p', p]
    if input_topic:
        cmd += ['-r', f'~/input/points:={input_topic}']
    return cmd


def start_segmenter(
    bundle: str | Path,
    domain_id: int,
    *params: str,
    input_topic: str | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """Start the segmenter node as a child process (output to ``log_path``, or discarded)."""
    out = open(log_path, 'wb') if log_path is not None else subprocess.DEVNULL
    return subprocess.Popen(
        segmenter_command(bundle, *params, input_topic=input_topic),
        env=ros_subprocess_env(domain_id),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Ctrl-C the process (rclpy shuts down cleanly on SIGINT); kill it if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def process_rss_mb(pid: int) -> float:
    """Return the resident memory of a process in MiB, from /proc (NaN where it is not there)."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')
