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

"""The preparer's pacing: take the next scan one preparation before the network frees up."""

import pytest
from relidar_ros.pacing import MAX_DELAY_S, StagePacer


def test_no_delay_until_both_stages_are_timed_or_while_the_network_is_idle():
    pacer = StagePacer()
    assert pacer.delay(0.0) == 0.0
    pacer.network_started(0.0)
    assert pacer.delay(0.0) == 0.0          # the network was never timed
    pacer.network_finished(0.150)
    pacer.prepared(0.030)
    assert pacer.delay(0.2) == 0.0          # idle: prepare at once


def test_delay_is_the_network_remainder_less_one_preparation():
    pacer = StagePacer(smoothing=1.0)       # no smoothing: the last durations
    pacer.network_started(0.0)
    pacer.network_finished(0.150)
    pacer.prepared(0.030)
    pacer.network_started(10.0)
    # expected to finish at 10.150; preparing takes 0.030 -> start at 10.120
    assert pacer.delay(10.0) == pytest.approx(0.120)
    assert pacer.delay(10.100) == pytest.approx(0.020)
    assert pacer.delay(10.140) == 0.0       # late already: at once
    pacer.prepared(5.0)                     # preparation slower than the network: no wait
    assert pacer.delay(10.0) == 0.0


def test_averages_smooth_and_the_delay_is_capped():
    pacer = StagePacer(smoothing=0.5)
    for start, took in ((0.0, 0.100), (1.0, 0.300)):
        pacer.network_started(start)
        pacer.network_finished(start + took)
    pacer.prepared(0.0)
    pacer.network_started(5.0)
    assert pacer.delay(5.0) == pytest.approx(0.200)   # (0.100 + 0.300) / 2
    for start in (6.0, 20.0):
        pacer.network_started(start)
        pacer.network_finished(start + 10.0)           # a stall: the average grows
    pacer.network_started(40.0)
    assert pacer.delay(40.0) == MAX_DELAY_S
