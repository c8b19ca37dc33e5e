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

"""The newest-scan mailbox (an untaken scan is replaced, never queued) and the output order."""

import threading

from relidar_ros.latest_scan import LatestScan, PublishOrder


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


def test_publish_order_refuses_a_result_older_than_one_out():
    order = PublishOrder()
    with order.turn(200) as ok:
        assert ok  # the first result goes out
    with order.turn(100) as ok:
        assert not ok  # received before the one already out: superseded
    with order.turn(200) as ok:
        assert ok  # the same scan again (equal receipt times) is not older
    with order.turn(300) as ok:
        assert ok


def test_publish_order_holds_the_turn_while_publishing():
    order = PublishOrder()
    published = []
    inside = threading.Event()
    release = threading.Event()

    def slow_lane():
        with order.turn(100) as ok:
            inside.set()
            release.wait(5.0)
            if ok:
                published.append(100)

    def fast_lane():
        with order.turn(200) as ok:
            if ok:
                published.append(200)

    a = threading.Thread(target=slow_lane)
    a.start()
    assert inside.wait(5.0)
    b = threading.Thread(target=fast_lane)
    b.start()
    b.join(0.2)
    assert b.is_alive()  # the newer result waits for the turn instead of overtaking
    release.set()
    a.join(5.0)
    b.join(5.0)
    assert published == [100, 200]


def test_a_closed_mailbox_hands_out_nothing():
    # A scan waiting when the node closes is not labelled (and so never published from a node
    # being destroyed); one arriving after close is not stored.
    box = LatestScan()
    box.put('waiting', 1)
    box.close()
    assert box.take(0.01) is None
    assert box.put('late', 2) is False
    assert box.take(0.01) is None
