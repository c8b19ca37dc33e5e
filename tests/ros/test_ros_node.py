"""The segmenter node over real DDS (Fast DDS, loopback, a domain of its own): bags replayed into the
running node come back labelled; hundreds of malformed clouds do not stop it; a new class list
through the ``classes`` parameter changes the next scan's labels; a bad value set at run time is
refused with the parameter's range; an unknown parameter is warned about; with the replay's
/clock and ``use_sim_time`` the pipeline latency is measured on the bag's time.

The node's pure parts and its start-up failures are tested in the package
(ros2_ws/src/relidar_ros/test)."""

from __future__ import annotations

import array
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")

from support.ros_support import RosPeer, fresh_domain_id, write_cloud_bag, xyzi_cloud
from support.scan_support import street_scan

from relidar.core.pointcloud2 import read_cloud
from relidar.core.scan_io import read_scan
from relidar_ros.environment import (
    PROFILE_ENV,
    default_fastdds_profile,
    ros_package_source,
    start_segmenter,
    stop_process,
)
from relidar_ros.replay import replay_bag

pytestmark = pytest.mark.ros
OUTPUT_FIELDS = ("x", "y", "z", "intensity", "label", "score", "rgb")
INPUT_TOPIC = "/lidar/points"  # the synthetic world's lidar topic; the node is remapped onto it


@pytest.fixture(scope="module", autouse=True)
def fastdds_profile():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROFILE_ENV, str(default_fastdds_profile()))
        mp.syspath_prepend(str(ros_package_source()))
        yield


# -- with a bundle, over DDS ------------------------------------------------------------------------------
def _small_bundle(tmp: Path) -> Path:
    """A small random-weight bundle (tests/support/bundle_support.py)."""
    from support.bundle_support import write_test_bundle

    return Path(write_test_bundle(tmp / "bundle"))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def node(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(peer, node process, segmenter) with the node listening on INPUT_TOPIC."""
    tmp = tmp_path_factory.mktemp("node")
    bundle = bundle_dir
    from relidar.core.segmenter import Segmenter

    reference = Segmenter(bundle)
    domain = fresh_domain_id()
    log = tmp / "node.log"
    # score_treshold (sic): an unknown name is warned about and the node runs on.
    proc = start_segmenter(bundle, domain, "max_points:=400000", "score_treshold:=0.5", input_topic=INPUT_TOPIC,
                           log_path=log)
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    with RosPeer(domain) as peer:
        peer.subscribe(PointCloud2, "/segmenter/output/points",
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        peer.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        ready = peer.wait_until(lambda: peer.node.count_publishers("/segmenter/output/points") > 0
                                or proc.poll() is not None, timeout_s=60)
        if not ready or proc.poll() is not None:
            stop_process(proc)
            pytest.fail(f"node did not start: {log.read_text()[-3000:]}")
        yield peer, proc, reference, log
        stop_process(proc)


def _check_labelled(msg, expected_points: np.ndarray, num_classes: int, frame: str = "velodyne") -> np.ndarray:
    arr = read_cloud(msg)
    assert arr.dtype.names == OUTPUT_FIELDS
    assert msg.header.frame_id == frame
    assert arr.size == expected_points.shape[0]
    np.testing.assert_array_equal(np.stack([arr["x"], arr["y"], arr["z"]], 1), expected_points[:, :3])
    assert arr["label"].max() <= num_classes
    return arr


def _synthetic_bag(path: Path) -> tuple[list[np.ndarray], Path, str]:
    """Two sweeps of the project's synthetic world (`relidar synth --format bag`'s writer, no cameras)."""
    from relidar.core.config import load_config
    from relidar.synthetic.world import SynthConfig, SyntheticWorld
    from relidar.synthetic.writers import LIDAR_FRAME, LIDAR_TOPIC, BagWriter

    assert LIDAR_TOPIC == INPUT_TOPIC
    cfg = load_config(None, SynthConfig, ["cameras.names=[]", "rate_hz=2.0"])
    scans = []
    with BagWriter(path, "mcap") as writer:
        for sample in SyntheticWorld(cfg).samples(2):
            writer.write(sample)
            scans.append(sample.frame.points.astype(np.float32))
    return scans, path, LIDAR_FRAME


@pytest.mark.slow
def test_replayed_bags_come_back_labelled(node, tmp_path: Path, kitti_scan_path: Path) -> None:
    peer, proc, seg, _ = node
    topic = "/segmenter/output/points"
    num_classes = len(seg.vocabulary.class_names)
    kitti = read_scan(kitti_scan_path).astype(np.float32)[:, :4]
    kitti_bag = write_cloud_bag(tmp_path / "kitti", [xyzi_cloud(kitti)] * 2, topic=INPUT_TOPIC, period_s=0.5,
                                storage="sqlite3")
    cases = [("synthetic", *_synthetic_bag(tmp_path / "synthetic")), ("kitti", [kitti, kitti], kitti_bag, "velodyne")]
    for name, scans, bag, frame in cases:
        before = len(peer.received[topic])
        received_before = int(_diagnostics(peer).get("received", 0))
        labelled_before = int(_diagnostics(peer).get("labelled", 0))
        stats = replay_bag(bag, domain_id=peer.domain_id, wait_for_subscribers_s=10, delay_s=0.2)
        assert stats.per_topic[INPUT_TOPIC] == 2
        # Every scan the node received is accounted for; two lanes label the two scans, and one that
        # finishes after the newer one is superseded, not published (the output never goes back in
        # time). The input is best effort, so a scan may also be lost before the node (seen: the
        # first after discovery, 2 runs in 10, also before the lanes): 1 or 2 clouds come back, each labelled.
        settled = _wait_settled(peer, time.time() + 1.0, 60)
        assert int(settled["received"]) > received_before, f"{name}: {settled}"
        got = peer.wait_for(topic, before + int(settled["labelled"]) - labelled_before, timeout_s=10)[before:]
        assert 1 <= len(got) <= 2, f"{name}: {len(got)} labelled clouds"
        refs: dict[int, object] = {}
        for msg in got:
            n = msg.width * msg.height
            scan = next(s for s in scans if len(s) == n and np.array_equal(read_cloud(msg)["x"], s[:, 0]))
            arr = _check_labelled(msg, scan, num_classes, frame)
            ref = refs.setdefault(id(scan), seg(scan))  # the same bundle in-process: the node's labels
            ref_labels = np.where(ref.labels < 0, num_classes, ref.labels)
            assert (arr["label"] == ref_labels).mean() > 0.99
    assert proc.poll() is None


def _diagnostics(peer) -> dict[str, str]:
    """The node's last /diagnostics values."""
    diags = peer.received["/diagnostics"]
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def _wait_settled(peer, since_s: float, timeout_s: float) -> dict[str, str]:
    """The first /diagnostics stamped after ``since_s`` (system time) in which every scan the node received
    is accounted for (labelled, dropped, rejected, failed or superseded): nothing waits or is being labelled."""
    def settled() -> bool:
        diags = peer.received["/diagnostics"]
        if not diags or diags[-1].header.stamp.sec + diags[-1].header.stamp.nanosec * 1e-9 < since_s:
            return False
        v = _diagnostics(peer)
        done = sum(int(v.get(k, 0)) for k in ("labelled", "rejected", "dropped", "failed", "superseded"))
        return done == int(v.get("received", -1))
    assert peer.wait_until(settled, timeout_s), f"not settled: {_diagnostics(peer)}"
    return _diagnostics(peer)


def _adversarial_clouds(n: int, seed: int = 0):
    from sensor_msgs.msg import PointCloud2, PointField

    rng = np.random.default_rng(seed)
    good = xyzi_cloud(street_scan(500, 3))
    out = []
    for i in range(n):
        m = PointCloud2()
        m.header.frame_id = "velodyne"
        m.height, m.width = good.height, good.width
        m.point_step, m.row_step = good.point_step, good.row_step
        m.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in good.fields]
        data = good.data
        kind = i % 10
        if kind == 0:
            m.point_step = int(rng.choice([0, 1, 12, 15, 2**20 + 1]))
        elif kind == 1:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2:
            m.fields = [f for f in m.fields if f.name != rng.choice(["x", "y", "z"])]
        elif kind == 3:
            m.width, m.height, m.row_step, data = 0, 1, 0, b""
        elif kind == 4:
            m.width = 500_000  # more than max_points
        elif kind == 5:
            m.fields[0].datatype = int(rng.choice([0, 9, 200]))
        elif kind == 6:
            m.fields[1].offset = int(rng.choice([2, 14, 4000]))
        elif kind == 7:  # parses: all NaN -> rejected as no finite point
            data = np.full(good.width * 4, np.nan, np.float32).tobytes()
        elif kind == 8:  # parses: absurd coordinates -> every point out of range, labelled unknown
            data = (rng.normal(size=good.width * 4) * 1e30).astype(np.float32).tobytes()
        else:  # parses: big-endian float64 cloud with padding
            dt = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": [">f8"] * 4,
                           "offsets": [0, 8, 16, 28], "itemsize": 40})
            arr = np.zeros(good.width, dt)
            arr["x"] = rng.normal(size=good.width) * 10
            m.fields = [PointField(name=n, offset=dt.fields[n][1], datatype=8, count=1) for n in dt.names]
            m.is_bigendian, m.point_step, m.row_step = True, 40, 40 * good.width
            data = arr.tobytes()
        payload = array.array("B")
        payload.frombytes(data)
        m.data = payload
        out.append(m)
    return out


@pytest.mark.slow
def test_fuzzed_clouds_then_a_valid_one(node) -> None:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    peer, proc, seg, _ = node
    topic = "/segmenter/output/points"
    pub = peer.node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    assert peer.wait_until(lambda: pub.get_subscription_count() > 0, 10)
    labelled_before = len(peer.received[topic])
    for msg in _adversarial_clouds(300):
        pub.publish(msg)
        time.sleep(0.003)
    time.sleep(0.5)
    valid = street_scan(3000, 4)
    before = len(peer.received[topic])
    from std_msgs.msg import Header

    from relidar_ros.conversions import cloud_to_msg

    for _ in range(5):  # best effort: repeat until one arrives (the node keeps only the newest)
        pub.publish(cloud_to_msg(xyzi_cloud(valid), Header(frame_id="velodyne")))
        got = peer.wait_for(topic, before + 1, timeout_s=5)[before:]
        if got:
            break
    assert proc.poll() is None, "node died"
    assert got, "the valid cloud was not labelled after the fuzzing"
    _check_labelled(got[-1], valid, len(seg.vocabulary.class_names))

    def last_diagnostics() -> dict[str, str]:
        diags = peer.received["/diagnostics"]
        return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}

    def accounted(values: dict[str, str]) -> int:
        return sum(int(values.get(k, 0)) for k in ("labelled", "rejected", "dropped", "failed", "superseded"))

    # Diagnostics come at 1 Hz and a snapshot may catch scans still pending or being labelled; once
    # input stops, a later one must have counted the fuzzing, the valid cloud and every scan received.
    assert peer.wait_until(lambda: int(last_diagnostics().get("labelled", 0)) >= labelled_before + 1
                           and int(last_diagnostics().get("rejected", 0)) >= 20
                           and accounted(last_diagnostics()) == int(last_diagnostics().get("received", -1)), 10)
    values = last_diagnostics()
    assert {"input_rate_hz", "output_rate_hz", "dropped", "backend", "vocabulary"} <= set(values)
    peer.node.destroy_publisher(pub)


@pytest.mark.slow
def test_lanes_publish_in_order_and_account_for_every_scan(node) -> None:
    """The node labels with two lanes (its default): large and small scans in turn, published faster than
    it labels them, so a small scan's lane can finish before the large one received earlier. The output
    stamps never go back in time, and every scan received is published, dropped (replaced unlabelled)
    or superseded (labelled after a newer one was out)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from relidar_ros.conversions import cloud_to_msg

    peer, proc, seg, _ = node
    topic = "/segmenter/output/points"
    pub = peer.node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    assert peer.wait_until(lambda: pub.get_subscription_count() > 0, 10)
    large, small = street_scan(120_000, 11), street_scan(2_000, 12)
    clouds = {len(large): xyzi_cloud(large), len(small): xyzi_cloud(small)}
    before = len(peer.received[topic])
    sent = []
    for i in range(24):
        header = Header(frame_id="velodyne")
        header.stamp.sec, header.stamp.nanosec = 1_000 + i, 0
        pub.publish(cloud_to_msg(clouds[len(large) if i % 2 == 0 else len(small)], header))
        sent.append(1_000 + i)
        time.sleep(0.03)

    # 1 s after the burst every scan of it is received or lost; a scan still being labelled would
    # reach the next test
    _wait_settled(peer, time.time() + 1.0, 30)
    stamps = [m.header.stamp.sec for m in peer.received[topic][before:]]
    assert stamps, "nothing labelled"
    assert set(stamps) <= set(sent)
    assert stamps == sorted(set(stamps)), f"out of order: {stamps}"
    for msg in peer.received[topic][before:]:
        _check_labelled(msg, large if msg.header.stamp.sec % 2 == 0 else small, len(seg.vocabulary.class_names))
    assert proc.poll() is None
    peer.node.destroy_publisher(pub)


def _set_classes(peer, classes: list[str]):
    from rcl_interfaces.msg import ParameterType, ParameterValue

    return _set_parameter(peer, "classes",
                          ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=classes))


def _set_parameter(peer, name: str, value):
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters

    client = peer.node.create_client(SetParameters, "/segmenter/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    req = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    future = client.call_async(req)
    assert peer.wait_until(future.done, 30)
    peer.node.destroy_client(client)
    return future.result().results[0]


@pytest.mark.slow
def test_classes_parameter_changes_next_scan(node) -> None:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from relidar_ros.conversions import cloud_to_msg

    peer, proc, seg, _ = node
    topic = "/segmenter/output/points"
    names = [str(c) for c in seg.vocabulary.class_names]
    assert len(names) >= 2
    refused = _set_classes(peer, [])
    assert not refused.successful and "empty" in refused.reason
    pub = peer.node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    assert peer.wait_until(lambda: pub.get_subscription_count() > 0, 10)
    scan = street_scan(5000, 5)

    def label_once() -> np.ndarray:
        before = len(peer.received[topic])
        for _ in range(5):
            pub.publish(cloud_to_msg(xyzi_cloud(scan), Header(frame_id="velodyne")))
            got = peer.wait_for(topic, before + 1, timeout_s=10)[before:]
            if got:
                return read_cloud(got[-1])["label"]
        pytest.fail("no labelled cloud")

    try:
        ok = _set_classes(peer, [names[1]])
        assert ok.successful, ok.reason
        one = label_once()
        # one class: every classified point is class 0, the rest unknown (= 1)
        assert set(np.unique(one)) <= {0, 1} and (one == 0).any()
        ok = _set_classes(peer, [names[1], names[0]])
        assert ok.successful, ok.reason
        two = label_once()
        assert set(np.unique(two)) <= {0, 1, 2}
    finally:
        _set_classes(peer, names)
        peer.node.destroy_publisher(pub)
    assert proc.poll() is None


@pytest.mark.slow
def test_bench_node_reports_latency_and_memory(bundle_dir: Path, tmp_path: Path) -> None:
    from relidar_ros.bench import NodeBenchConfig, run_node_bench

    cfg = NodeBenchConfig(bundle=bundle_dir, scan=street_scan(5000, 6), rate_hz=5.0, seconds=2.0,
                          domain_id=fresh_domain_id(), log_path=tmp_path / "node.log")
    result = run_node_bench(cfg)
    assert result["published"] == 10
    assert 1 <= result["labelled"] <= 10 and result["lost"] == 10 - result["labelled"]
    assert result["dropped"] >= 0 and result["node_alive_at_end"]
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert result["rss_mb_start"] > 10 and result["rss_mb_end"] > 10
    assert result["rss_growth_mb_after_warmup"] == result["rss_mb_end"] - result["rss_mb_after_warmup"]
    series = result["rss_mb_series"]  # a 2 s run: warm-up is its last sample
    assert abs(result["rss_mb_after_warmup"] - series[min(5, len(series) - 1)]) <= 0.05
    assert result["points_labelled_per_scan"] == 5000


@pytest.mark.slow
def test_intensity_scale_brings_driver_intensity_to_training_range(node) -> None:
    """A driver publishing 0..255 with intensity_scale 1/255 is labelled as the same scan in 0..1."""
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from relidar_ros.conversions import cloud_to_msg

    peer, proc, seg, _ = node
    topic = "/segmenter/output/points"
    scan = street_scan(5000, 11)
    driver = scan.copy()
    driver[:, 3] *= 255.0
    expected = seg(scan).labels
    if (seg(driver).labels == expected).mean() > 0.99:
        pytest.skip("this bundle's labels do not depend on intensity: the test would prove nothing")
    pub = peer.node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    assert peer.wait_until(lambda: pub.get_subscription_count() > 0, 10)
    try:
        ok = _set_parameter(peer, "intensity_scale", ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                                     double_value=1.0 / 255.0))
        assert ok.successful, ok.reason
        before = len(peer.received[topic])
        got = []
        for _ in range(5):
            pub.publish(cloud_to_msg(xyzi_cloud(driver), Header(frame_id="velodyne")))
            got = peer.wait_for(topic, before + 1, timeout_s=10)[before:]
            if got:
                break
        assert got, "no labelled cloud"
        arr = _check_labelled(got[-1], driver, len(seg.vocabulary.class_names))
        np.testing.assert_allclose(arr["intensity"], driver[:, 3])  # published as received
        inside = expected >= 0
        assert (arr["label"][inside] == expected[inside]).mean() > 0.99
    finally:
        _set_parameter(peer, "intensity_scale", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.0))
        peer.node.destroy_publisher(pub)


@pytest.mark.slow
def test_unknown_parameter_warned_and_bad_value_refused_at_run_time(node) -> None:
    from rcl_interfaces.msg import ParameterType, ParameterValue

    peer, proc, seg, log = node
    text = log.read_text()
    assert "unknown parameter 'score_treshold'" in text and "did you mean 'score_threshold'" in text
    refused = _set_parameter(peer, "score_threshold", ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                                      double_value=2.0))
    assert not refused.successful and "score_threshold" in refused.reason and "1.0" in refused.reason
    refused = _set_parameter(peer, "min_range", ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                                double_value=500.0))
    assert not refused.successful and "max_range" in refused.reason
    refused = _set_parameter(peer, "backend", ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                              string_value="torch"))
    assert not refused.successful  # read-only: the model is chosen at start
    assert proc.poll() is None


@pytest.mark.slow
def test_pipeline_latency_on_the_bag_clock_with_use_sim_time(bundle_dir: Path, tmp_path: Path) -> None:
    """The bag is from the past: on the system clock its pipeline latency would be years; with the
    replay's /clock and use_sim_time the node measures it on the bag's time."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Float64

    scans = [street_scan(3000, 20 + i) for i in range(4)]
    bag = write_cloud_bag(tmp_path / "bag", [xyzi_cloud(s) for s in scans], topic=INPUT_TOPIC, period_s=0.5)
    domain = fresh_domain_id()
    log = tmp_path / "node.log"
    proc = start_segmenter(bundle_dir, domain, "use_sim_time:=true", input_topic=INPUT_TOPIC, log_path=log)
    try:
        with RosPeer(domain) as peer:
            peer.subscribe(PointCloud2, "/segmenter/output/points",
                           QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
            peer.subscribe(Float64, "/segmenter/debug/pipeline_latency_ms", QoSProfile(depth=10),
                           keep=lambda m: m.data)
            peer.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
            # No /clock reader here: the replay waits until each of its publishers has a subscriber, and on
            # /clock the node's suffices, so a second /clock reader can still be undiscovered when the short
            # replay ends (seen: 1 whole-suite run in 5 where this peer got no /clock at all). That /clock
            # carries the bag's time, rising, is test_ros_replay's, where the peer is its only reader.
            assert peer.wait_until(lambda: peer.node.count_publishers("/segmenter/output/points") > 0
                                   or proc.poll() is not None, 60), log.read_text()
            assert proc.poll() is None, log.read_text()
            stats = replay_bag(bag, domain_id=domain, wait_for_subscribers_s=10, delay_s=0.2, clock_hz=50.0)
            assert stats.per_topic[INPUT_TOPIC] == 4 and stats.clock_messages > 0
            # Diagnostics tick on the steady clock, so they go on after the bag's /clock ends. Their stamps
            # are bag time, so "after the replay" is the second status to arrive after it (>= 1 s later:
            # a scan still on the wire has been received by then), then settled from there.
            after_replay = len(peer.received["/diagnostics"]) + 2
            assert len(peer.wait_for("/diagnostics", after_replay, timeout_s=10)) >= after_replay
            settled = _wait_settled(peer, 0.0, 30)
            labelled, behind = int(settled["labelled"]), int(settled["clock_behind_stamp"])
            # Every published scan gives one latency or, its stamp ahead of the last /clock tick (20 ms
            # apart at 50 Hz, while labelling takes ~5-15 ms), one count of clock_behind_stamp.
            latencies = peer.wait_for("/segmenter/debug/pipeline_latency_ms", labelled - behind, timeout_s=10)
    finally:
        stop_process(proc)
    assert labelled >= 1, f"{settled}\n{log.read_text()}"
    assert len(latencies) == labelled - behind, (latencies, settled)
    # Bag stamps are from 2023: years (1e11 ms) on the system clock, well under a minute on the bag's;
    # never negative (the clock behind a stamp was counted above instead).
    assert all(0.0 <= v < 60_000.0 for v in latencies), latencies
    assert "/clock" in settled["pipeline_latency_clock"]
    if behind:
        assert 0.0 < float(settled["clock_behind_stamp_ms"]) < 1000.0 / 50 + 50, settled


def test_processor_labels_as_the_segmenter_and_rejects_what_it_cannot_use(bundle_dir: Path, tmp_path: Path) -> None:
    from relidar.core.errors import RelidarError
    from relidar_ros.labelling import LabelPolicy
    from relidar_ros.parameters import ParameterError
    from relidar_ros.processing import ScanProcessor, ScanRejected, Settings, StartupError, load_segmenter

    segmenter = load_segmenter(str(bundle_dir), "auto", "cpu")
    processor = ScanProcessor(segmenter)
    scan = street_scan(2000, 7)
    settings = Settings(LabelPolicy(0.0, 0.0, 200.0), max_points=10_000, intensity_scale=1.0)
    out = processor.label(xyzi_cloud(scan), settings)
    arr = read_cloud(out.cloud)
    reference = segmenter(scan).labels
    num_classes = len(out.class_names)
    np.testing.assert_array_equal(arr["label"], np.where(reference < 0, num_classes, reference))
    assert {"preprocess_ms", "network_ms", "total_ms", "convert_ms"} <= set(out.timings_ms)
    assert (out.non_finite_xyz, out.non_finite_intensity) == (0, 0)
    # the Segmenter's one NaN rule, counted as it counts and reported by the node's diagnostics: 3 points
    # with a NaN coordinate published unknown, 4 NaN/inf intensities kept out of the voxel features
    dirty = scan.copy()
    dirty[:3, 0] = np.nan
    dirty[10:14, 3] = [np.nan, np.inf, -np.inf, np.nan]
    repaired = processor.label(xyzi_cloud(dirty), settings)
    assert (repaired.non_finite_xyz, repaired.non_finite_intensity) == (3, 4)
    # every input point goes out, in input order, labelled as the Segmenter labels the dirty scan
    published = read_cloud(repaired.cloud)
    assert len(published) == len(scan) and not repaired.cloud.is_dense
    np.testing.assert_array_equal(np.c_[published["x"], published["y"], published["z"], published["intensity"]], dirty)
    expected = segmenter(dirty)
    np.testing.assert_array_equal(published["label"], np.where(expected.labels < 0, num_classes, expected.labels))
    assert (published["label"][:3] == num_classes).all() and (published["score"][:3] == 0).all()
    assert (expected.non_finite_xyz, expected.non_finite_intensity) == (3, 4)
    from relidar.core.segmenter import repair_text
    from relidar_ros.diagnostics import Counters, DiagnosticsReporter

    counters, reporter = Counters(), DiagnosticsReporter("relidar", "onnxruntime")
    counters.received(False)
    reporter.status(0.0, counters.snapshot(), ["car"], "steady")
    counters.received(False)
    counters.labelled(len(scan), 1.0, 2.0, repaired.non_finite_xyz, repaired.non_finite_intensity)
    status = reporter.status(1.0, counters.snapshot(), ["car"], "steady")
    values = {kv.key: kv.value for kv in status.values}
    assert (values["non_finite_xyz"], values["non_finite_intensity"]) == ("3", "4")
    assert status.level == status.WARN and status.message == f"repaired input: {repair_text(3, 4)}"
    assert "3 point(s) with a NaN/inf coordinate" in status.message and "4 point(s) with NaN/inf intensity" in status.message
    # a stamp ahead of the clock: counted, with by how much; a warning on system time, not on sim time
    counters.received(False)
    counters.labelled(10, 1.0, float("nan"), clock_behind_ms=3.5)
    snap = counters.snapshot()
    for sim, level in ((False, status.WARN), (True, status.OK)):
        behind = DiagnosticsReporter("relidar", "onnxruntime")
        behind.status(0.0, replace(snap, clock_behind_stamp=0, received=snap.received - 1), ["car"], "steady", sim_time=sim)
        status = behind.status(1.0, snap, ["car"], "steady", sim_time=sim)
        values = {kv.key: kv.value for kv in status.values}
        assert (values["clock_behind_stamp"], values["clock_behind_stamp_ms"]) == ("1", "3.5")
        assert status.level == level, status.message
    too_small = Settings(settings.policy, max_points=100, intensity_scale=1.0)
    nan_scan = np.full((50, 4), np.nan, np.float32)
    for cloud, s in ((xyzi_cloud(scan), too_small), (xyzi_cloud(nan_scan), settings)):
        with pytest.raises(ScanRejected):
            processor.label(cloud, s)
    with pytest.raises(ParameterError) as refused:
        processor.set_classes([" "])
    assert refused.value.field == "classes" and processor.class_names() == list(out.class_names)
    # the node's two pipeline stages: a scan prepared before a vocabulary change is labelled with the
    # vocabulary it was prepared with (its text embeddings travel in its feed), the next with the new one
    prepared = processor.prepare(xyzi_cloud(scan), settings)
    processor.set_classes(["road", "car"])
    before = processor.finish(prepared)
    assert before.class_names == out.class_names
    np.testing.assert_array_equal(read_cloud(before.cloud)["label"], arr["label"])
    after = processor.label(xyzi_cloud(scan), settings)
    assert after.class_names == ("road", "car") and read_cloud(after.cloud)["label"].max() <= 2
    for bundle, words in (("", "empty"), (str(tmp_path / "missing"), "does not exist"), (str(tmp_path), "cannot load")):
        with pytest.raises(StartupError) as failed:
            load_segmenter(bundle, "auto", "cpu")
        assert isinstance(failed.value, RelidarError) and failed.value.field == "bundle"
        assert words in failed.value.message


def test_close_stops_the_lanes_before_the_node_is_destroyed(bundle_dir: Path) -> None:
    """In-process: a scan waiting at close is not labelled, close() joins every lane (so nothing
    publishes from a node being destroyed), and a cloud arriving after close is not stored."""
    import rclpy
    from rclpy.parameter import Parameter

    from relidar_ros.segmenter_node import SegmenterNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=fresh_domain_id())
    try:
        node = SegmenterNode(context=context, parameter_overrides=[
            Parameter("bundle", value=str(bundle_dir)), Parameter("lanes", value=2)])
        node.close()
        assert not any(lane.is_alive() for lane in node._lanes)
        node._on_cloud(xyzi_cloud(street_scan(500, 5)))
        time.sleep(0.5)  # would be ample for a lane to pick it up, were one running
        snap = node._counters.snapshot()
        assert (snap.received, snap.labelled, snap.failed) == (1, 0, 0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_a_class_change_does_not_stall_labelling(bundle_dir: Path) -> None:
    """While the text tower encodes a new class list, scans are still labelled (with the old list);
    then the new list is installed. Two changes at once: the one requested last wins, whichever
    finishes encoding first."""
    import threading

    from relidar_ros.labelling import LabelPolicy
    from relidar_ros.processing import ScanProcessor, Settings, load_segmenter

    segmenter = load_segmenter(str(bundle_dir), "auto", "cpu")
    old = segmenter.vocabulary.class_names
    real = segmenter.text_encoder
    release = {"first": threading.Event(), "second": threading.Event()}
    started = threading.Event()

    class Held:
        """The bundle's encoder, held at its first call until the test releases the request."""

        def __init__(self, name: str) -> None:
            self.name = name

        def encode_text(self, prompts):
            started.set()
            assert release[self.name].wait(60)
            return real.encode_text(prompts)

    processor = ScanProcessor(segmenter)
    settings = Settings(LabelPolicy(0.0, 0.0, 200.0), max_points=10_000, intensity_scale=1.0)
    cloud = xyzi_cloud(street_scan(2000, 7))
    errors: list[BaseException] = []

    def change(classes: list[str], name: str) -> threading.Thread:
        def run() -> None:
            try:
                segmenter._text_encoder = Held(name)  # this request's encoder (read once, at its start)
                processor.set_classes(classes)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(exc)
        started.clear()
        t = threading.Thread(target=run)
        t.start()
        assert started.wait(30)
        return t

    first = change(["road", "car"], "first")
    labelled = []
    t = threading.Thread(target=lambda: labelled.append(processor.label(cloud, settings)))
    t.start()
    t.join(60)  # a liveness bound, not a timing: the label call must not wait for the encoder
    assert labelled and labelled[0].class_names == old, "labelling waited for the class change"
    second = change(["car", "road", "building"], "second")
    release["second"].set()
    second.join(60)
    release["first"].set()  # the older request finishes last: it must not replace the newer one
    first.join(60)
    assert not errors, errors
    assert processor.class_names() == ["car", "road", "building"]
    assert processor.label(cloud, settings).class_names == ("car", "road", "building")
