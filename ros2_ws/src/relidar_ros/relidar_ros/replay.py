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
Publish a rosbag2 (sqlite3 or MCAP) on ROS 2 with its recorded timing, optionally its clock.

Messages are never deserialised: ``rosbags`` hands over the stored CDR bytes and rclpy publishes
them as they are (``Publisher.publish(bytes)`` -> ``rcl_publish_serialized_message``). rclpy is
imported inside the functions that use it, so ``relidar`` (and ``relidar --help``) import no ROS.

With a clock the player publishes the bag's time on ``/clock`` (as ``ros2 bag play --clock``
does), so nodes with ``use_sim_time`` see the recording's time. The player can start paused; its
node's ``paused`` parameter pauses and resumes it (``ros2 param set /relidar_replay paused
false``), and the bag time stands still while it is paused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import importlib
from pathlib import Path
import threading
import time
from typing import Any, Callable, Sequence

from relidar.core.errors import RelidarError


class ReplayError(RelidarError):
    """The bag cannot be replayed (missing, unreadable, no topic to publish)."""


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int
    latched: bool


@dataclass
class ReplayStats:
    """What a replay published."""

    published: int = 0
    loops: int = 0
    clock_messages: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why


ProgressFn = Callable[[int, int, str], None]  # (published so far, messages per pass, topic)
NODE_NAME = 'relidar_replay'
CLOCK_HZ = 40.0  # as `ros2 bag play --clock` without a value


def _open(path: Path) -> Any:
    from rosbags.rosbag2 import Reader, ReaderError

    if not path.exists():
        raise ReplayError('bag does not exist', path=path)
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError) as exc:
        raise ReplayError(f'cannot read bag: {exc}', path=path,
                          hint='expected a rosbag2 folder, sqlite3 or mcap') from None
    return reader


def bag_topics(path: str | Path) -> list[BagTopic]:
    """Return the bag's topics with types, message counts and whether they were latched."""
    from rosbags.interfaces import QosDurability

    reader = _open(Path(path))
    try:
        topics: dict[str, BagTopic] = {}
        for c in reader.connections:
            offered = c.ext.offered_qos_profiles or []
            latched = c.topic == '/tf_static' or any(
                q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
            prev = topics.get(c.topic)
            count = c.msgcount + (prev.count if prev else 0)
            topics[c.topic] = BagTopic(c.topic, c.msgtype, count,
                                       latched or bool(prev and prev.latched))
        return list(topics.values())
    finally:
        reader.close()


def message_class(msgtype: str) -> type:
    """Return the rclpy message class of a ROS type name (``sensor_msgs/msg/PointCloud2``)."""
    parts = msgtype.split('/')
    if len(parts) == 2:  # ROS 1 style "pkg/Type"
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ReplayError(f'message type {msgtype!r} is not of the form package/msg/Type')
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f'{pkg}.{kind}')
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise ReplayError(f'message type {msgtype} is not installed in this Python',
                          hint=f'install the ROS package {pkg}') from None


class PlaybackClock:
    """
    The bag time as the player plays it.

    It runs at ``rate`` times the steady clock from an anchor (the first message of a pass) and
    stands still while paused; the player waits on it for each message's stamp.
    """

    def __init__(self, rate: float, paused: bool) -> None:
        self._cond = threading.Condition()
        self._rate = rate
        self._paused = paused
        self._anchor: tuple[int, float] | None = None  # (bag ns, steady s) at the anchor

    def start(self, bag_ns: int) -> None:
        """Set the bag time to ``bag_ns`` now (the start of a pass)."""
        with self._cond:
            self._anchor = (bag_ns, time.monotonic())
            self._cond.notify_all()

    def _now_locked(self) -> int | None:
        if self._anchor is None:
            return None
        bag_ns, wall_s = self._anchor
        if self._paused:
            return bag_ns
        return bag_ns + int((time.monotonic() - wall_s) * self._rate * 1e9)

    def now_ns(self) -> int | None:
        """Return the bag time now, or None before the first pass started."""
        with self._cond:
            return self._now_locked()

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """Pause or resume; the bag time goes on from where it stood."""
        with self._cond:
            now = self._now_locked()
            self._paused = paused
            if now is not None:
                self._anchor = (now, time.monotonic())
            self._cond.notify_all()

    def sleep_until(self, bag_ns: int, stop: threading.Event) -> bool:
        """Wait until the bag time reaches ``bag_ns``; return False when ``stop`` was set."""
        with self._cond:
            while not stop.is_set():
                now = self._now_locked()
                if now is None or self._paused:
                    self._cond.wait(0.05)
                    continue
                remaining_s = (bag_ns - now) / 1e9 / self._rate
                if remaining_s <= 0:
                    return True
                self._cond.wait(min(remaining_s, 0.05))
        return False


def replay_bag(
    path: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    topics: Sequence[str] | None = None,
    delay_s: float = 0.5,
    wait_for_subscribers_s: float = 0.0,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    domain_id: int | None = None,
    node_name: str = NODE_NAME,
    clock_hz: float = 0.0,
    start_paused: bool = False,
) -> ReplayStats:
    """
    Publish the bag's messages at ``rate`` times their recorded pace until done or ``stop``.

    Topics whose type is not installed here are skipped (listed in the stats). ``/tf_static`` and
    any topic recorded transient-local are published transient-local. ``wait_for_subscribers_s``
    waits up to that long for every publisher (/clock included) to be matched before the first
    message.
    ``clock_hz`` > 0 publishes the bag time on /clock that often; ``start_paused`` waits for the
    node's ``paused`` parameter to be set false.
    """
    if rate <= 0:
        raise ReplayError(f'rate must be positive, got {rate}', field='rate')
    if clock_hz < 0:
        raise ReplayError(f'clock rate must be positive, got {clock_hz}', field='clock_hz')
    path = Path(path)
    available = bag_topics(path)
    wanted = {t.name for t in available} if not topics else set(topics)
    missing = wanted - {t.name for t in available}
    if missing:
        raise ReplayError(f'topics {sorted(missing)} are not in the bag (it has '
                          f'{sorted(t.name for t in available)})', path=path, field='topics')

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stats = ReplayStats()
    classes: dict[str, type] = {}
    for t in available:
        if t.name not in wanted:
            continue
        try:
            classes[t.name] = message_class(t.msgtype)
        except ReplayError as exc:
            stats.skipped_topics[t.name] = str(exc)
    if not classes:
        raise ReplayError(f'no topic of the bag can be published here: {stats.skipped_topics}',
                          path=path)

    stop = stop or threading.Event()
    finished = threading.Event()  # ends the helper threads, whatever ended the replay
    clock = PlaybackClock(rate, start_paused)
    context = rclpy.Context()
    # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt for the caller, and replay also
    # runs from worker threads (tests), where handlers cannot be installed.
    rclpy.init(context=context, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    threads: list[threading.Thread] = []
    try:
        node = rclpy.create_node(node_name, context=context)
        publishers = _publishers(node, available, classes)
        stats.per_topic = dict.fromkeys(publishers, 0)
        _declare_paused(node, clock)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def spin() -> None:
            try:
                executor.spin()
            except ExternalShutdownException:
                pass

        threads.append(threading.Thread(target=spin, name='relidar-replay-spin', daemon=True))
        # /clock is matched before the first message like the bag's topics: a node on use_sim_time
        # that has not seen /clock yet would measure the first scans against time zero.
        matched = list(publishers.values())
        if clock_hz > 0:
            clock_pub = _clock_publisher(node)
            matched.append(clock_pub)
            threads.append(threading.Thread(
                target=_publish_clock, args=(clock_pub, clock, clock_hz, finished, stats),
                name='relidar-replay-clock', daemon=True))
        for t in threads:
            t.start()
        deadline = time.monotonic() + wait_for_subscribers_s
        while time.monotonic() < deadline and not stop.is_set():
            if all(p.get_subscription_count() > 0 for p in matched):
                break
            stop.wait(0.02)
        stop.wait(delay_s)
        per_pass = sum(t.count for t in available if t.name in publishers)
        while not stop.is_set():
            _one_pass(path, publishers, clock, stop, stats, per_pass, on_progress)
            stats.loops += 1
            if not loop:
                break
        # Give the middleware a moment to hand the last (possibly large) samples over.
        stop.wait(0.2)
    finally:
        finished.set()
        for t in threads[1:]:  # the clock publisher stops before its context goes
            t.join(timeout=5.0)
        rclpy.try_shutdown(context=context)  # ends the spinning thread
        for t in threads[:1]:
            t.join(timeout=5.0)
    return stats


def _publishers(node: Any, available: list[BagTopic], classes: dict[str, type]) -> dict[str, Any]:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    publishers = {}
    for t in available:
        if t.name not in classes:
            continue
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=100 if t.latched else 10,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=(DurabilityPolicy.TRANSIENT_LOCAL if t.latched
                        else DurabilityPolicy.VOLATILE),
        )
        publishers[t.name] = node.create_publisher(classes[t.name], t.name, qos)
    return publishers


def _declare_paused(node: Any, clock: PlaybackClock) -> None:
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

    node.declare_parameter('paused', clock.paused, ParameterDescriptor(
        description='Pause (true) or resume (false) the replay; the bag time stands still.'))

    def on_set(params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == 'paused':
                clock.set_paused(bool(p.value))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def _clock_publisher(node: Any) -> Any:
    """Create the /clock publisher: best effort, depth 1, as ros2 bag play's."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    return node.create_publisher(Clock, '/clock', QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))


def _publish_clock(pub: Any, clock: PlaybackClock, hz: float, finished: threading.Event,
                   stats: ReplayStats) -> None:
    """Publish the bag time on ``pub`` (/clock) at ``hz``."""
    from rosgraph_msgs.msg import Clock

    while not finished.wait(1.0 / hz):
        now = clock.now_ns()
        if now is None:
            continue
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(now, 1_000_000_000)
        pub.publish(msg)
        stats.clock_messages += 1


def _one_pass(
    path: Path,
    publishers: dict[str, Any],
    clock: PlaybackClock,
    stop: threading.Event,
    stats: ReplayStats,
    per_pass: int,
    on_progress: ProgressFn | None,
) -> None:
    reader = _open(path)
    try:
        conns = [c for c in reader.connections if c.topic in publishers]
        started = False
        for n, (conn, stamp_ns, raw) in enumerate(reader.messages(connections=conns)):
            if not started:
                clock.start(stamp_ns)
                started = True
            if not clock.sleep_until(stamp_ns, stop):
                return
            publishers[conn.topic].publish(bytes(raw))
            stats.published += 1
            stats.per_topic[conn.topic] += 1
            if on_progress is not None:
                on_progress(n + 1, per_pass, conn.topic)
    finally:
        reader.close()
