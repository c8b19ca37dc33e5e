"""``relidar replay``: a rosbag2 written with rosbags is published over real DDS (Fast DDS, loopback)
and an in-process subscriber receives the clouds byte for byte."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")

from support.ros_support import RosPeer, fresh_domain_id, write_cloud_bag, xyzi_cloud

from relidar.core.pointcloud2 import cloud_to_xyzi, read_cloud
from relidar_ros.environment import PROFILE_ENV, default_fastdds_profile
from relidar_ros.replay import ReplayError, bag_topics, message_class, replay_bag

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module", autouse=True)
def fastdds_profile():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROFILE_ENV, str(default_fastdds_profile()))
        yield


def _clouds(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=10, size=(size, 4)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_publishes_bag_clouds(tmp_path: Path, storage: str) -> None:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    points = _clouds(4, 120_000)  # ~1.9 MB each: needs the large shared-memory segment
    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in points], storage=storage, tf_static=True)
    listing = {t.name: t for t in bag_topics(bag)}
    assert listing["/points_raw"].count == 4 and listing["/tf_static"].latched

    domain = fresh_domain_id()
    with RosPeer(domain) as peer:
        peer.subscribe(PointCloud2, "/points_raw", qos_profile_sensor_data)
        stats = replay_bag(bag, rate=2.0, domain_id=domain, wait_for_subscribers_s=10.0, delay_s=0.3)
        got = peer.wait_for("/points_raw", 4, timeout_s=10.0)
    assert stats.published == 4 and stats.per_topic == {"/points_raw": 4}
    # tf2_msgs has no Python wheel here: the topic is reported as skipped, not an error.
    assert "/tf_static" in stats.skipped_topics or stats.per_topic.get("/tf_static") == 1
    assert len(got) == 4
    for msg, ref in zip(got, points):
        assert msg.header.frame_id == "velodyne"
        np.testing.assert_array_equal(cloud_to_xyzi(msg), ref)
        assert read_cloud(msg).dtype.names == ("x", "y", "z", "intensity")


def test_replay_loop_stops_on_event(tmp_path: Path) -> None:
    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in _clouds(2, 10)], period_s=0.05)
    stop = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int, topic: str) -> None:
        seen.append(done)
        if len(seen) >= 5:
            stop.set()

    stats = replay_bag(bag, rate=4.0, loop=True, stop=stop, on_progress=progress, domain_id=fresh_domain_id(),
                       delay_s=0.0)
    assert stats.published == 5 and stats.loops >= 2
    assert seen[:3] == [1, 2, 1]


def test_replay_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        bag_topics(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayError, match="cannot read bag"):
        bag_topics(tmp_path / "empty")
    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in _clouds(1, 5)])
    with pytest.raises(ReplayError, match="not in"):
        replay_bag(bag, topics=["/nope"])
    with pytest.raises(ReplayError, match="rate"):
        replay_bag(bag, rate=0)
    assert message_class("sensor_msgs/msg/PointCloud2").__name__ == "PointCloud2"
    with pytest.raises(ReplayError, match="not installed"):
        message_class("no_such_msgs/msg/Thing")


def test_replay_command_reports_missing_bag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import build_app

    root = build_app()  # the relidar group: a ReplayError (a RelidarError) becomes one line and exit 1
    result = CliRunner().invoke(root, ["replay", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert str(tmp_path / "missing") in result.output and "Traceback" not in result.output
    # A bag played with its clock: the summary counts the /clock messages.
    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in _clouds(3, 10)], period_s=0.2)
    result = CliRunner().invoke(root, ["replay", str(bag), "--clock", "--clock-hz", "20", "--delay", "0",
                                       "--domain-id", str(fresh_domain_id())])
    assert result.exit_code == 0, result.output
    clock = re.search(r"/clock (\d+)", result.output)
    assert "published 3 messages" in result.output and clock and int(clock.group(1)) >= 3


def test_replay_publishes_the_bag_clock(tmp_path: Path) -> None:
    """With a clock, /clock carries the bag's time (stamps from 2023), rising, while the clouds play."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2

    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in _clouds(5, 50)], period_s=0.2)
    domain = fresh_domain_id()
    with RosPeer(domain) as peer:
        peer.subscribe(Clock, "/clock", QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT),
                       keep=lambda m: m.clock.sec * 10**9 + m.clock.nanosec)
        peer.subscribe(PointCloud2, "/points_raw", qos_profile_sensor_data,
                       keep=lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
        stats = replay_bag(bag, domain_id=domain, wait_for_subscribers_s=10.0, delay_s=0.3, clock_hz=50.0)
        clouds = peer.wait_for("/points_raw", 5, timeout_s=10.0)
        clock = list(peer.received["/clock"])
    assert stats.published == 5 and stats.clock_messages > 10
    assert len(clock) > 10 and clock == sorted(clock)
    # The bag time spans the recording: from its first message to its last (0.8 s), not wall time.
    first, last = min(clouds), max(clouds)
    assert first - 10**9 <= clock[0] <= first + 10**9 and last - 10**9 < clock[-1] <= last + 10**9


def test_replay_starts_paused_until_the_paused_parameter_is_cleared(tmp_path: Path) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2

    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(p) for p in _clouds(3, 50)], period_s=0.1)
    domain = fresh_domain_id()
    result: dict = {}
    stop = threading.Event()  # ends a player left paused if an assert below fails
    with RosPeer(domain) as peer:
        peer.subscribe(PointCloud2, "/points_raw", qos_profile_sensor_data)
        peer.subscribe(Clock, "/clock", QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT),
                       keep=lambda m: m.clock.sec * 10**9 + m.clock.nanosec)
        player = threading.Thread(target=lambda: result.update(stats=replay_bag(
            bag, domain_id=domain, wait_for_subscribers_s=10.0, delay_s=0.0, clock_hz=50.0, start_paused=True,
            stop=stop)))
        player.start()
        try:
            client = peer.node.create_client(SetParameters, "/relidar_replay/set_parameters")
            assert client.wait_for_service(timeout_sec=20)
            # Paused: the clock stands still at the bag's start and nothing is published.
            assert peer.wait_until(lambda: len(peer.received["/clock"]) >= 20, 10)
            assert peer.received["/points_raw"] == []
            assert len(set(peer.received["/clock"])) == 1
            request = SetParameters.Request(parameters=[Parameter(
                name="paused", value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False))])
            future = client.call_async(request)
            assert peer.wait_until(future.done, 10) and future.result().results[0].successful
            got = peer.wait_for("/points_raw", 3, timeout_s=10.0)
            player.join(timeout=30.0)
        finally:
            stop.set()
            player.join(timeout=30.0)
    assert len(got) == 3 and result["stats"].published == 3
    assert len(set(peer.received["/clock"])) > 1  # time moved once resumed
