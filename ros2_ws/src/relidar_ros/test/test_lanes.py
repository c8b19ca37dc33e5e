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

"""How many ONNX Runtime threads each lane's network call gets."""

import os

from relidar_ros.processing import network_threads


def test_auto_shares_the_usable_cpus_among_the_lanes():
    cpus = len(os.sched_getaffinity(0))
    assert network_threads(2) == max(1, cpus // 2)
    assert network_threads(cpus * 4) == 1  # more lanes than CPUs: still one thread each
    assert network_threads(1) is None  # one lane: ONNX Runtime's own choice


def test_a_requested_count_is_used_as_given():
    assert network_threads(2, 3) == 3
    assert network_threads(1, 1) == 1
