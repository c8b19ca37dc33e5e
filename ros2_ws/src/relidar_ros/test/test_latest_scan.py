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

"""The newest-scan mailbox: a scan the worker has not taken is replaced, never queued."""

import threading

from relidar_ros.latest_scan import LatestScan


def test_latest_scan_keeps_only_the_newest():
    box = LatestScan()
    assert box.put('a', 1) is False
    assert box.put('b', 2) is True  # "a" was never taken: dropped
    assert box.take(0.01) == ('b', 2)
    assert box.take(0.01) is None


def test_take_waits_for_a_put_and_close_wakes_it():
    box = LatestScan()
    got = []
    t = threading.Thread(target=lambda: got.append(box.take(5.0)))
    t.start()
    box.put('c', 3)
    t.join(5.0)
    assert got == [('c', 3)]
    t = threading.Thread(target=lambda: got.append(box.take(30.0)))
    t.start()
    box.close()
    t.join(5.0)
    assert not t.is_alive() and got[-1] is None
