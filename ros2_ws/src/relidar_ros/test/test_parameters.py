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
The parameter schema is the one source: the node's descriptors, the params files, the README.

schema/segmenter.schema.json gives each parameter's type, default, range and description; the
node declares its parameters from it, config/model.yaml and config/params.yaml must validate
against it with its defaults, and the README's table is generated from it.
"""

import json
from pathlib import Path

import jsonschema
import pytest
from rcl_interfaces.msg import ParameterType
from relidar.core.backends import BACKENDS
from relidar.core.errors import RelidarError
from relidar_ros.parameters import (
    check_overrides,
    load_specs,
    markdown_table,
    ParameterError,
    unknown_parameters,
    usage,
)
import yaml

PACKAGE = Path(__file__).resolve().parents[1]
SCHEMA = PACKAGE / 'schema' / 'segmenter.schema.json'
README = PACKAGE.parents[2] / 'README.md'
PARAM_FILES = ('model.yaml', 'params.yaml')


@pytest.fixture(scope='module')
def specs():
    return load_specs(SCHEMA)


def _ros_parameters(name):
    return yaml.safe_load((PACKAGE / 'config' / name).read_text())['/**']['ros__parameters']


def test_params_files_validate_against_the_schema_with_its_defaults(specs):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    seen = {}
    for name in PARAM_FILES:
        doc = yaml.safe_load((PACKAGE / 'config' / name).read_text())
        jsonschema.validate(doc, schema)
        for key, value in doc['/**']['ros__parameters'].items():
            assert key not in seen, f'{key} is in both {seen.get(key)} and {name}'
            seen[key] = name
            assert value == specs[key].default, f'{name}: {key} = {value!r}, schema default ' \
                                                f'{specs[key].default!r}'
    # Every parameter with a default is shown in one of the files, bar the launch argument.
    assert set(seen) == {n for n, s in specs.items() if s.has_default} - {'bundle'}
    # Model parameters and node parameters stay apart (Autoware-style).
    model = {'backend', 'device', 'formulation', 'lanes', 'network_threads'}
    assert set(_ros_parameters('model.yaml')) == model


def test_a_misspelt_params_file_fails_the_schema():
    schema = json.loads(SCHEMA.read_text())
    doc = {'/**': {'ros__parameters': {'score_treshold': 0.5}}}
    with pytest.raises(jsonschema.ValidationError, match='score_treshold'):
        jsonschema.validate(doc, schema)


def test_readme_table_is_generated_from_the_schema(specs):
    if not README.is_file():
        pytest.skip('the package is outside the relidar repository (no README beside it)')
    assert markdown_table(specs) in README.read_text(), \
        'README parameter table is stale: paste `python -m relidar_ros.parameters` into it'


def test_backend_choices_are_the_cores(specs):
    assert tuple(specs['backend'].schema['enum']) == BACKENDS


def test_descriptors_carry_type_range_and_description(specs):
    d = specs['score_threshold'].descriptor()
    assert d.type == ParameterType.PARAMETER_DOUBLE
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (0.0, 1.0)
    assert 'a number in [0.0, 1.0]' == d.additional_constraints
    d = specs['max_points'].descriptor()
    assert d.type == ParameterType.PARAMETER_INTEGER and d.integer_range[0].to_value == 100_000_000
    assert specs['bundle'].descriptor().read_only
    assert not specs['score_threshold'].descriptor().read_only
    assert specs['classes'].descriptor().type == ParameterType.PARAMETER_STRING_ARRAY
    for spec in specs.values():
        assert spec.description, spec.name


@pytest.mark.parametrize('name, value, hint', [
    ('score_threshold', 2.0, 'a number in [0.0, 1.0]'),
    ('score_threshold', -0.1, 'a number in [0.0, 1.0]'),
    ('max_range', 'far', 'a number in [0.0, 1000.0]'),
    ('max_range', 100, 'write 100.0'),
    ('max_points', 0, 'an integer in [1, 100000000]'),
    ('max_points', 5.0, 'an integer'),
    ('backend', 'cuda', 'one of auto, tensorrt, onnxruntime, fused, torch'),
    ('device', 'gpu0', 'matching'),
    ('classes', [], 'a non-empty list'),
    ('classes', ['car', 'car'], 'distinct'),
    ('classes', ['car', ''], 'non-empty strings'),
    ('classes', 'car', 'a non-empty list'),
])
def test_a_bad_value_names_the_parameter_and_what_it_takes(specs, name, value, hint):
    with pytest.raises(ParameterError) as caught:
        specs[name].check(value)
    err = caught.value
    assert isinstance(err, RelidarError)
    assert err.field == name and hint in err.hint
    assert '\n' not in err.one_line()


def test_good_values_pass(specs):
    for name, value in (('score_threshold', 1.0), ('max_range', 80.0), ('max_points', 1),
                        ('backend', 'onnxruntime'), ('device', 'cuda:1'), ('classes', ['car'])):
        specs[name].check(value)


def test_min_range_must_be_below_max_range(specs):
    with pytest.raises(ParameterError) as caught:
        check_overrides({'min_range': 50.0, 'max_range': 50.0}, specs)
    assert caught.value.field == 'min_range'
    check_overrides({'min_range': 1.0, 'max_range': 50.0}, specs)


def test_unknown_names_are_warned_with_a_guess(specs):
    warnings = unknown_parameters(
        ['score_treshold', 'use_sim_time', 'bundle',
         'qos_overrides./parameter_events.publisher.depth', 'zzz'], specs)
    assert len(warnings) == 2
    assert "'score_treshold'" in warnings[0] and "did you mean 'score_threshold'" in warnings[0]
    assert "'zzz'" in warnings[1] and 'did you mean' not in warnings[1]


def test_usage_lists_every_parameter(specs):
    text = usage(specs)
    for spec in specs.values():
        assert spec.name in text and spec.valid_values() in text
