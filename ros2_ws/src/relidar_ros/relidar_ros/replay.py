"""Publish a rosbag2 (sqlite3 or MCAP) on ROS 2 with its recorded timing.

Messages are never deserialised: ``rosbags`` hands over the stored CDR bytes and rclpy publishes them
as they are (``Publisher.publish(bytes)`` -> ``rcl_publish_serialized_message``). rclpy is imported
inside the functions that use it, so ``relidar`` (and ``relidar --help``) import no ROS.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


class ReplayError(RuntimeError):
    """The bag cannot be replayed (missing, unreadable, no topic to publish); the message says why."""


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str
    count: int
    latched: bool


@dataclass
class ReplayStats:
    published: int = 0
    loops: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why


ProgressFn = Callable[[int, int, str], None]  # (published so far, messages per pass, topic)


def _open(path: Path) -> Any:
    from rosbags.rosbag2 import Reader, ReaderError

    if not path.exists():
        raise ReplayError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError) as exc:
        raise ReplayError(f"cannot read bag {path}: {exc} (expected a rosbag2 folder, sqlite3 or mcap)") from None
    return reader


def bag_topics(path: str | Path) -> list[BagTopic]:
    """Topics of a rosbag2 with their types, message counts and whether they were recorded latched."""
    from rosbags.interfaces import QosDurability

    reader = _open(Path(path))
    try:
        topics: dict[str, BagTopic] = {}
        for c in reader.connections:
            qos = getattr(c.ext, "offered_qos_profiles", []) or []
            latched = c.topic == "/tf_static" or any(
                getattr(q, "durability", None) == QosDurability.TRANSIENT_LOCAL for q in qos
            )
            prev = topics.get(c.topic)
            count = c.msgcount + (prev.count if prev else 0)
            topics[c.topic] = BagTopic(c.topic, c.msgtype, count, latched or bool(prev and prev.latched))
        return list(topics.values())
    finally:
        reader.close()


def message_class(msgtype: str) -> type:
    """The rclpy message class of a ROS type name such as ``sensor_msgs/msg/PointCloud2``."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style "pkg/Type"
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ReplayError(f"message type {msgtype!r} is not of the form package/msg/Type")
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise ReplayError(f"message type {msgtype} is not installed in this Python (package {pkg})") from None


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
    node_name: str = "relidar_replay",
) -> ReplayStats:
    """Publish the bag's messages at ``rate`` times their recorded pace until done (or ``stop`` is set).

    Topics whose type is not installed here are skipped (listed in the stats). ``/tf_static`` and any
    topic recorded transient-local are published transient-local. ``wait_for_subscribers_s`` waits up
    to that long for every publisher to be matched before the first message (useful in tests).
    """
    if rate <= 0:
        raise ReplayError(f"--rate must be positive, got {rate}")
    path = Path(path)
    available = bag_topics(path)
    wanted = {t.name for t in available} if not topics else set(topics)
    missing = wanted - {t.name for t in available}
    if missing:
        raise ReplayError(f"topics {sorted(missing)} are not in {path} (it has {sorted(t.name for t in available)})")

    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
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
        raise ReplayError(f"no topic of {path} can be published here: {stats.skipped_topics}")

    stop = stop or threading.Event()
    context = rclpy.Context()
    # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt for the caller, and replay also runs
    # from worker threads (tests), where handlers cannot be installed.
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(node_name, context=context)
        publishers = {}
        for t in available:
            if t.name not in classes:
                continue
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=100 if t.latched else 10,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if t.latched else DurabilityPolicy.VOLATILE,
            )
            publishers[t.name] = node.create_publisher(classes[t.name], t.name, qos)
            stats.per_topic[t.name] = 0
        deadline = time.monotonic() + wait_for_subscribers_s
        while time.monotonic() < deadline and not stop.is_set():
            if all(p.get_subscription_count() > 0 for p in publishers.values()):
                break
            stop.wait(0.02)
        stop.wait(delay_s)
        per_pass = sum(t.count for t in available if t.name in publishers)
        while not stop.is_set():
            _one_pass(path, publishers, rate, stop, stats, per_pass, on_progress)
            stats.loops += 1
            if not loop:
                break
        # Give the middleware a moment to hand the last (possibly large) samples over.
        stop.wait(0.2)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    return stats


def _one_pass(
    path: Path,
    publishers: dict[str, Any],
    rate: float,
    stop: threading.Event,
    stats: ReplayStats,
    per_pass: int,
    on_progress: ProgressFn | None,
) -> None:
    reader = _open(path)
    try:
        conns = [c for c in reader.connections if c.topic in publishers]
        start_wall = time.monotonic()
        start_bag: int | None = None
        for n, (conn, stamp_ns, raw) in enumerate(reader.messages(connections=conns)):
            if start_bag is None:
                start_bag = stamp_ns
            due = start_wall + (stamp_ns - start_bag) / 1e9 / rate
            wait = due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return
            if stop.is_set():
                return
            publishers[conn.topic].publish(bytes(raw))
            stats.published += 1
            stats.per_topic[conn.topic] += 1
            if on_progress is not None:
                on_progress(n + 1, per_pass, conn.topic)
    finally:
        reader.close()
