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
The segmenter node's parameters, read from the one schema file ``schema/segmenter.schema.json``.

The schema (JSON Schema, as Autoware packages keep it) gives each parameter its type, default,
range and description. From it the node declares its ROS parameters (with descriptors, so
``ros2 param describe`` shows the ranges), checks every value it is given before it starts,
warns about names it does not know (a typo in a params file is otherwise silently ignored), and
prints its ``--help`` text; the README's parameter table is generated from it too
(``python -m relidar_ros.parameters``).

ROS parameters are typed: ``-p max_range:=100`` is an integer, and rclpy refuses an integer for a
double parameter with an exception; here it is one line that names the parameter and what it
takes, before rclpy sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
import difflib
import json
from pathlib import Path
import sys
from typing import Any, Iterable, Mapping

import jsonschema
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from relidar.core.errors import RelidarError
from relidar_ros.environment import package_file

SCHEMA = 'schema/segmenter.schema.json'
# Parameters rclpy itself declares or accepts on every node: never "unknown".
ROS_OWN_PARAMETERS = ('use_sim_time', 'start_type_description_service')
ROS_OWN_PREFIXES = ('qos_overrides.',)

_ROS_TYPES = {
    'string': ParameterType.PARAMETER_STRING,
    'number': ParameterType.PARAMETER_DOUBLE,
    'integer': ParameterType.PARAMETER_INTEGER,
    'boolean': ParameterType.PARAMETER_BOOL,
}
_ROS_ARRAY_TYPES = {
    'string': ParameterType.PARAMETER_STRING_ARRAY,
    'number': ParameterType.PARAMETER_DOUBLE_ARRAY,
    'integer': ParameterType.PARAMETER_INTEGER_ARRAY,
    'boolean': ParameterType.PARAMETER_BOOL_ARRAY,
}
_PYTHON_TYPES = {'string': str, 'number': float, 'integer': int, 'boolean': bool}


class ParameterError(RelidarError):
    """A parameter value the node cannot use; ``field`` names the parameter."""


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter as the schema describes it."""

    name: str
    schema: Mapping[str, Any]

    @property
    def json_type(self) -> str:
        return str(self.schema['type'])

    @property
    def item_type(self) -> str | None:
        items = self.schema.get('items')
        return str(items['type']) if items else None

    @property
    def ros_type(self) -> int:
        if self.json_type == 'array':
            return _ROS_ARRAY_TYPES[self.item_type or 'string']
        return _ROS_TYPES[self.json_type]

    @property
    def has_default(self) -> bool:
        return 'default' in self.schema

    @property
    def default(self) -> Any:
        return self.schema.get('default')

    @property
    def description(self) -> str:
        return str(self.schema.get('description', ''))

    @property
    def read_only(self) -> bool:
        return bool(self.schema.get('readOnly', False))

    def descriptor(self) -> ParameterDescriptor:
        """Return the ROS descriptor: type, description, read-only flag, numeric range."""
        d = ParameterDescriptor(name=self.name, type=self.ros_type,
                                description=self.description, read_only=self.read_only)
        lo, hi = self.schema.get('minimum'), self.schema.get('maximum')
        if lo is not None and hi is not None:
            if self.json_type == 'number':
                d.floating_point_range = [
                    FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            elif self.json_type == 'integer':
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        d.additional_constraints = self.valid_values()
        return d

    def valid_values(self) -> str:
        """Say in words what the parameter takes, e.g. 'a number in [0.0, 1.0]'."""
        s = self.schema
        if 'enum' in s:
            return 'one of ' + ', '.join(str(v) for v in s['enum'])
        if self.json_type == 'array':
            what = 'a non-empty list' if s.get('minItems', 0) >= 1 else 'a list'
            distinct = ' of distinct' if s.get('uniqueItems') else ' of'
            return f'{what}{distinct} non-empty {self.item_type}s'
        kind = {'number': 'a number', 'integer': 'an integer', 'string': 'a string',
                'boolean': 'true or false'}[self.json_type]
        if 'minimum' in s and 'maximum' in s:
            return f'{kind} in [{s["minimum"]}, {s["maximum"]}]'
        if 'pattern' in s:
            return f'{kind} matching {s["pattern"]}'
        return kind

    def check(self, value: Any) -> None:
        """Raise ParameterError unless ``value`` (as ROS gives it) is valid for this parameter."""
        if not self._ros_type_matches(value):
            hint = f'it takes {self.valid_values()}'
            if self.json_type == 'number' and _is_int(value):
                hint += f'; ROS parameters are typed: write {value}.0'
            raise ParameterError(f'{value!r} is not valid', field=self.name, hint=hint)
        errors = list(jsonschema.Draft7Validator(dict(self.schema)).iter_errors(value))
        if errors:
            raise ParameterError(f'{value!r} is not valid', field=self.name,
                                 hint=f'it takes {self.valid_values()}')

    def _ros_type_matches(self, value: Any) -> bool:
        if self.json_type == 'array':
            return isinstance(value, (list, tuple)) and all(
                _python_type_matches(v, self.item_type or 'string') for v in value)
        return _python_type_matches(value, self.json_type)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _python_type_matches(value: Any, json_type: str) -> bool:
    if json_type == 'integer':
        return _is_int(value)
    if json_type == 'boolean':
        return isinstance(value, bool)
    return isinstance(value, _PYTHON_TYPES[json_type])


def schema_path() -> Path:
    """Return the schema file: from the installed package share, else the source tree."""
    path = package_file(SCHEMA)
    if path is None:
        raise ParameterError('the parameter schema is not installed with relidar_ros',
                             path=SCHEMA, hint='rebuild the package (colcon build)')
    return path


def load_schema(path: Path | None = None) -> dict[str, Any]:
    """Return the schema document (checked to be a valid JSON Schema)."""
    path = path or schema_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(f'cannot read the parameter schema: {exc}', path=path) from None
    jsonschema.Draft7Validator.check_schema(doc)
    return doc


def load_specs(path: Path | None = None) -> dict[str, ParameterSpec]:
    """Return the node's parameters by name, in the schema's order."""
    doc = load_schema(path)
    props = doc['definitions']['segmenter']['properties']
    return {name: ParameterSpec(name, prop) for name, prop in props.items()}


def unknown_parameters(given: Iterable[str], specs: Mapping[str, ParameterSpec]) -> list[str]:
    """Return a warning for each given name the node does not know (else a typo goes unseen)."""
    warnings = []
    for name in sorted(given):
        if name in specs or name in ROS_OWN_PARAMETERS or name.startswith(ROS_OWN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, list(specs), n=1)
        guess = f"did you mean '{close[0]}'? " if close else ''
        warnings.append(f"unknown parameter '{name}' is ignored ({guess}"
                        f"the node's parameters: {', '.join(specs)})")
    return warnings


def check_overrides(overrides: Mapping[str, Any], specs: Mapping[str, ParameterSpec]) -> None:
    """Raise ParameterError for the first given value a known parameter cannot take."""
    for name, spec in specs.items():
        if name in overrides:
            spec.check(overrides[name])
    check_ranges(overrides)


def check_ranges(values: Mapping[str, Any]) -> None:
    """Raise ParameterError unless min_range < max_range (where both are given)."""
    lo, hi = values.get('min_range'), values.get('max_range')
    if lo is not None and hi is not None and not lo < hi:
        raise ParameterError(f'min_range {lo} is not below max_range {hi}', field='min_range',
                             hint='min_range must be smaller than max_range')


def usage(specs: Mapping[str, ParameterSpec]) -> str:
    """Return the node's --help text."""
    lines = [
        'segmenter: label every point of a lidar PointCloud2 with a relidar model bundle.',
        '',
        'usage: segmenter --ros-args -p bundle:=DIR [-p NAME:=VALUE ...] [--params-file FILE]',
        '                 [-r ~/input/points:=/your/lidar/topic]',
        '',
        'parameters:',
    ]
    for spec in specs.values():
        default = f'default {spec.default!r}' if spec.has_default else 'no default'
        lines.append(f'  {spec.name:<16} {spec.valid_values()}; {default}')
        lines.append(f'  {"":<16} {spec.description}')
    lines += ['', 'Set FASTDDS_DEFAULT_PROFILES_FILE to the shipped config/fastdds_shm.xml for '
              'large clouds (done automatically when unset).']
    return '\n'.join(lines)


def markdown_table(specs: Mapping[str, ParameterSpec]) -> str:
    """Return the README's parameter table (generated: the README is checked against it)."""
    rows = ['| parameter | type | default | valid values | changeable at run time | description |',
            '| --- | --- | --- | --- | --- | --- |']
    for spec in specs.values():
        default = f'`{json.dumps(spec.default)}`' if spec.has_default else "the bundle's"
        cells = [f'`{spec.name}`', spec.json_type, default, spec.valid_values(),
                 'no' if spec.read_only else 'yes', spec.description]
        rows.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(rows)


def main() -> int:
    """Print the README's parameter table."""
    sys.stdout.write(markdown_table(load_specs()) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
