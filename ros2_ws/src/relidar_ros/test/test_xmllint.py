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
The package's XML files: package.xml as rosdep and colcon read it, the Fast DDS profile.

ament_xmllint validates each file against the schema its xml-model line names, which it fetches
from the network, with the `xmllint` program; it runs where both are there. Offline, the same
files are checked here with the libraries that consume them: catkin_pkg (which rosdep, bloom and
colcon use to read package.xml) validates the manifest, and the profile is validated against
the XML schema that Fast DDS itself ships.
"""

import importlib.util
import os
from pathlib import Path
import shutil
import sys

import pytest

PACKAGE = Path(__file__).resolve().parents[1]


def _fastdds_schema():
    prefixes = [sys.prefix] + os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
    for prefix in filter(None, prefixes):
        for name in ('fastdds_profiles.xsd', 'fastRTPS_profiles.xsd'):
            path = Path(prefix) / 'share' / 'fastdds' / name
            if path.is_file():
                return path
    return None


@pytest.mark.linter
@pytest.mark.skipif(importlib.util.find_spec('ament_xmllint') is None
                    or shutil.which('xmllint') is None,
                    reason='ament_xmllint and xmllint (libxml2-utils) are not both installed')
def test_xmllint():
    from ament_xmllint.main import main
    assert main(argv=[str(PACKAGE)]) == 0, 'found XML errors (listed above)'


def test_package_xml_is_a_valid_format_3_manifest():
    package = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg is not installed')
    warnings = []
    manifest = package.parse_package(str(PACKAGE / 'package.xml'), warnings=warnings)
    manifest.validate(warnings=warnings)
    assert manifest.package_format == 3 and manifest.name == 'relidar_ros'
    assert not warnings, warnings
    assert manifest.get_build_type() == 'ament_python'
    exec_names = [d.name for d in manifest.exec_depends]
    assert len(exec_names) == len(set(exec_names))
    assert {'rclpy', 'launch', 'launch_ros', 'rviz2', 'ros2bag'} <= set(exec_names)
    assert {'ament_copyright', 'ament_flake8', 'ament_pep257', 'ament_xmllint', 'python3-pytest'} \
        <= {d.name for d in manifest.test_depends}


def test_fastdds_profile_is_valid_for_fastdds():
    xmlschema = pytest.importorskip('xmlschema', reason='xmlschema is not installed')
    xsd = _fastdds_schema()
    if xsd is None:
        pytest.skip('Fast DDS is not installed here (no share/fastdds/*profiles.xsd)')
    xmlschema.XMLSchema(str(xsd)).validate(str(PACKAGE / 'config' / 'fastdds_shm.xml'))
