"""QoS profiles of the node's topics, in one place so the node, replay and tests agree."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def sensor_input() -> QoSProfile:
    """Lidar input: best effort, keep last 1 — a late scan is worth nothing, only the newest counts.

    A best-effort subscription matches both best-effort and reliable driver publishers.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def labelled_output() -> QoSProfile:
    """Labelled clouds: reliable keep-last 1, so both RViz's default (reliable) and best-effort
    subscribers match; keep-last never blocks the publisher."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched() -> QoSProfile:
    """Legend and /tf_static: transient local, so late joiners (RViz opened later) still get it."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def debug() -> QoSProfile:
    """Timings and diagnostics: small, reliable, a short history."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
