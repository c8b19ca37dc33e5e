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
The node's newest-scan mailbox: one slot between the subscription callback and the worker.

A lidar scan that waited is worth less than the next one, so nothing queues: ``put`` replaces a
scan the worker has not taken yet (the caller counts it as dropped) and the worker always labels
the newest scan.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar('T')


class LatestScan(Generic[T]):
    """A one-slot mailbox: ``put`` replaces what the worker has not taken yet (never queues)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[T, int] | None = None
        self._closed = False

    def put(self, scan: T, received_ns: int) -> bool:
        """Store the scan; return True when it replaced one that was never taken."""
        with self._cond:
            replaced = self._item is not None
            self._item = (scan, received_ns)
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float) -> tuple[T, int] | None:
        """Return (scan, received_ns) once there is one, or None after ``timeout_s`` or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake a waiting ``take`` for good (the node is shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
