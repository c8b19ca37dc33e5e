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
Copyright and license notices, as ament_copyright checks them.

ament_copyright has no wheel on PyPI. Where it is installed (a ROS install) it runs; elsewhere the
same rule is checked here: every Python file of the package starts with a copyright line and the
notice of the license that package.xml names.
"""

import importlib.util
from pathlib import Path
import re
import xml.etree.ElementTree as ET

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
NOTICES = {
    'Apache-2.0': ('Licensed under the Apache License, Version 2.0 (the "License");',
                   'http://www.apache.org/licenses/LICENSE-2.0'),
}


def _sources():
    return sorted(p for p in PACKAGE.rglob('*.py') if '__pycache__' not in p.parts)


@pytest.mark.linter
def test_copyright():
    if importlib.util.find_spec('ament_copyright') is not None:
        from ament_copyright.main import main
        assert main(argv=[str(PACKAGE)]) == 0, 'found copyright errors (listed above)'
        return
    license_name = ET.parse(PACKAGE / 'package.xml').getroot().findtext('license')
    assert license_name in NOTICES, 'package.xml names a license this check does not know'
    missing = []
    for path in _sources():
        head = path.read_text().split('\n')[:15]
        copyright_line = re.fullmatch(r'# Copyright \d{4}(-\d{4})? \S.*', head[0])
        notice = all(any(line.endswith(text) for line in head) for text in NOTICES[license_name])
        if not (copyright_line and notice):
            missing.append(str(path.relative_to(PACKAGE)))
    assert len(_sources()) >= 10
    assert not missing, f'no copyright line or {license_name} notice in: {missing}'
