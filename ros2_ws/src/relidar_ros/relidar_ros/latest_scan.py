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
Newest first, in and out: the node's one-slot mailbox and the order its results leave in.

A lidar scan that waited is worth less than the next one, so nothing queues: ``put`` replaces a
scan no lane has taken yet (the caller counts it as dropped) and a free lane always labels the
newest scan. Lanes finish in any order, so :class:`PublishOrder` lets a result out only if no
newer scan's result went out first (the output topic's stamps never go back in time).
"""

from __future__ import annotations

from contextlib import contextmanager
import threading
from typing import Generic, Iterator, TypeVar

T = TypeVar('T')


class LatestScan(Generic[T]):
    """A one-slot mailbox: ``put`` replaces what no lane has taken yet (never queues)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[T, int] | None = None
        self._closed = False

    def put(self, scan: T, received_ns: int) -> bool:
        """
        Store the scan; return True when it replaced one that was never taken.

        After ``close`` the scan is not stored (nobody will take it) and False is returned.
        """
        with self._cond:
            if self._closed:
                return False
            replaced = self._item is not None
            self._item = (scan, received_ns)
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float) -> tuple[T, int] | None:
        """
        Return (scan, received_ns) once there is one, or None after ``timeout_s`` or close.

        Once closed, a scan still waiting is not handed out: a shutting-down node must not start
        labelling (and then publish from a node being destroyed).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout_s)
            if self._closed:
                self._item = None
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake a waiting ``take`` for good (the node is shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class PublishOrder:
    """Admits results in receipt order: one older than a result already out is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest_ns: int | None = None

    @contextmanager
    def turn(self, received_ns: int) -> Iterator[bool]:
        """
        Hold the publishing turn; yield whether the scan received at ``received_ns`` may go out.

        Publish inside the ``with`` block: the check and the publication are one step, so two
        lanes cannot both pass the check and then publish in the wrong order.
        """
        with self._lock:
            admitted = self._newest_ns is None or received_ns >= self._newest_ns
            if admitted:
                self._newest_ns = received_ns
            yield admitted
