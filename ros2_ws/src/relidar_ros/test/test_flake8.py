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

"""flake8 with ament's own configuration and plugins, as `colcon test` runs it in ROS packages."""

from pathlib import Path
import subprocess
import sys

import pytest

pytest.importorskip('ament_flake8.main', reason='ament_flake8 is not installed')

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    # Its own interpreter, run from the package: flake8 forks a worker pool, and a fork of the
    # test process (rclpy, torch and numba threads started by earlier tests) can deadlock (a CI
    # run hung here); ament_flake8 also walks the whole working directory for AMENT_IGNORE,
    # which from the repository root means all of .venv.
    proc = subprocess.run([sys.executable, '-m', 'ament_flake8.main', str(PACKAGE)], cwd=PACKAGE,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, 'code style errors:\n' + proc.stdout[-5000:] + proc.stderr[-2000:]
