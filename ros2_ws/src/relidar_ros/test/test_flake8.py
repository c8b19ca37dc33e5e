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

import pytest

main_with_errors = pytest.importorskip(
    'ament_flake8.main', reason='ament_flake8 is not installed').main_with_errors

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = main_with_errors(argv=[str(PACKAGE)])
    assert rc == 0, f'{len(errors)} code style errors:\n' + '\n'.join(errors)
