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
The node's entry point, started as ROS users start it: a bad start is one [FATAL] line, exit 1.

A value out of its range or of the wrong type names the parameter and what it takes (rclpy's
own exception would be a traceback); an unknown parameter name is a warning; a missing bundle
is fatal. No bundle is needed: each run stops before loading one.
"""

import os
import subprocess
import sys

import pytest
from relidar_ros.environment import ros_subprocess_env, segmenter_command


def _run(*args, params_file=None):
    cmd = segmenter_command('/nonexistent/bundle', *args)
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    domain = 1 + (os.getpid() * 13) % 200
    run = subprocess.run(cmd, env=ros_subprocess_env(domain), capture_output=True, text=True,
                         timeout=120)
    return run.returncode, run.stdout + run.stderr


def _fatal_lines(out):
    return [line for line in out.splitlines() if '[FATAL]' in line]


@pytest.mark.parametrize('param, names', [
    ('score_threshold:=2.0', ('score_threshold', '2.0', '[0.0, 1.0]')),
    ('max_range:=far', ('max_range', "'far'", '[0.0, 1000.0]')),
    ('max_range:=100', ('max_range', '100', 'write 100.0')),
    ('backend:=cuda', ('backend', 'one of auto, tensorrt, onnxruntime, fused, torch')),
    ('min_range:=300.0', ('min_range', 'max_range')),
])
def test_a_bad_parameter_is_one_fatal_line(param, names):
    rc, out = _run(param)
    assert rc == 1
    fatal = _fatal_lines(out)
    assert len(fatal) == 1, out
    assert all(n in fatal[0] for n in names), fatal[0]
    assert 'Traceback' not in out


def test_an_unknown_parameter_in_a_params_file_is_warned(tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    score_treshold: 0.5\n    max_range: 80.0\n')
    rc, out = _run(params_file=params)
    warnings = [line for line in out.splitlines() if '[WARN]' in line]
    assert len(warnings) == 1 and "'score_treshold'" in warnings[0]
    assert "did you mean 'score_threshold'" in warnings[0]
    # Then the start goes on to the bundle, which is not there.
    assert rc == 1 and 'bundle' in _fatal_lines(out)[0] and 'does not exist' in out
    assert 'Traceback' not in out


def test_a_params_file_that_does_not_parse_is_one_fatal_line(tmp_path):
    params = tmp_path / 'broken.yaml'
    params.write_text('/**:\n  ros__parameters: [unclosed\n')
    rc, out = _run(params_file=params)
    assert rc == 1 and len(_fatal_lines(out)) == 1 and 'Traceback' not in out


def test_help_lists_the_schema_parameters():
    run = subprocess.run([sys.executable, '-m', 'relidar_ros.segmenter_node', '--help'],
                         env=ros_subprocess_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name in ('bundle', 'backend', 'device', 'classes', 'score_threshold', 'min_range',
                 'max_range', 'intensity_scale', 'max_points'):
        assert f'  {name} ' in run.stdout
