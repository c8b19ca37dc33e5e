"""The synthetic world: determinism by seed, class imbalance, range-dependent density, consistent geometry."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.synthetic.classes import CLASS_NAMES, class_id, from_kitti_ids, to_kitti_ids
from relidar.synthetic.world import SynthConfig, SyntheticWorld


def small_config(seed: int, **lidar) -> SynthConfig:
    return SynthConfig(
        seed=seed,
        lidar={"beams": 32, "horizontal_resolution_deg": 0.4, **lidar},
        cameras={"names": ["front", "front_left"], "width": 96, "height": 64},
    )


@pytest.fixture(scope="module")
def samples():
    world = SyntheticWorld(small_config(3))
    return [world.sample(i) for i in (0, 10, 20, 30)]


def test_same_seed_same_data_different_seed_different_data():
    a = SyntheticWorld(small_config(7)).sample(2)
    b = SyntheticWorld(small_config(7)).sample(2)
    c = SyntheticWorld(small_config(8)).sample(2)
    assert np.array_equal(a.frame.points, b.frame.points)
    assert np.array_equal(a.frame.labels, b.frame.labels)
    for ca, cb in zip(a.frame.cameras, b.frame.cameras):
        assert np.array_equal(ca.image, cb.image)
    assert a.frame.points.shape != c.frame.points.shape or not np.array_equal(a.frame.points, c.frame.points)
    assert not np.array_equal(a.frame.cameras[0].image, c.frame.cameras[0].image)


def test_frame_fields(samples):
    f = samples[0].frame
    assert f.points.dtype == np.float32 and f.points.shape[1] == 4
    assert f.class_names == CLASS_NAMES and f.ignore_index == -1
    assert f.labels.min() >= 0 and f.labels.max() < len(CLASS_NAMES)
    assert 0.0 <= f.points[:, 3].min() and f.points[:, 3].max() <= 1.0
    assert samples[0].ring.max() < 32 and len(samples[0].ring) == f.num_points
    assert [c.name for c in f.cameras] == ["front", "front_left"]
    # The lidar sits 1.8 m up: the road lies near z = -1.8 in the lidar frame.
    road = f.labels == class_id("road")
    assert abs(np.median(f.points[road, 2]) + 1.8) < 0.05


def test_class_imbalance(samples):
    """Shares like real driving data (the bands themselves are checked in test_synthetic_calibration_bands.py):
    vegetation, road, sidewalk and building lead, people and signs form a long tail."""
    labels = np.concatenate([s.frame.labels for s in samples])
    frac = np.bincount(labels, minlength=len(CLASS_NAMES)) / len(labels)
    by_name = dict(zip(CLASS_NAMES, frac))
    big = sorted(CLASS_NAMES, key=lambda n: -by_name[n])[:5]
    assert {"vegetation", "road", "sidewalk", "building"} <= set(big), big
    assert by_name["road"] < 0.4 and by_name["terrain"] > 0.03
    assert by_name["person"] < 0.01 and by_name["pole"] < 0.03 and by_name["traffic-sign"] < 0.01
    assert by_name["truck"] < by_name["car"]
    for name in ("car", "sidewalk", "building", "vegetation", "terrain", "pole"):
        assert by_name[name] > 0, name
    assert frac.max() / frac[frac > 0].min() > 50  # a long tail, as in real driving data


def test_the_ego_vehicle_hides_the_nearest_ground(samples):
    """The lidar's steepest beams end on the ego car's roof and body: no return within ~3.5 m on the ground."""
    pts = np.concatenate([s.frame.points for s in samples])
    ground = pts[:, 2] < -1.5
    assert ground.sum() > 1000
    assert np.linalg.norm(pts[ground, :2], axis=1).min() > 3.5


def test_instances_persist_across_frames():
    """An object keeps its id from frame to frame (the teacher's per-object appearance relies on it)."""
    world = SyntheticWorld(small_config(3))
    a, b = world.sample(0).camera_truth[0], world.sample(1).camera_truth[0]
    ids_a, ids_b = set(np.unique(a.instances[a.instances > 0])), set(np.unique(b.instances[b.instances > 0]))
    assert len(ids_a & ids_b) >= 0.5 * len(ids_a)
    for truth in (a, b):
        assert (truth.instances[truth.classes < 0] == 0).all()  # sky
        assert (truth.instances[truth.classes >= 0] != 0).all()
        assert ((truth.incidence >= 0) & (truth.incidence <= 1.0 + 1e-6)).all()


def test_density_falls_with_range(samples):
    pts = np.concatenate([s.frame.points for s in samples])
    r = np.linalg.norm(pts[:, :2], axis=1)

    def density(r0: float, r1: float) -> float:
        return ((r >= r0) & (r < r1)).sum() / (np.pi * (r1**2 - r0**2))

    d_near, d_mid, d_far = density(5, 10), density(15, 25), density(30, 50)
    assert d_near > 3 * d_mid > 3 * 1.5 * d_far


def test_camera_depth_agrees_with_lidar(samples):
    """Lidar points projected with T_cam_from_lidar land on pixels whose rendered depth matches."""
    for s in samples[:2]:
        cam, truth = s.frame.cameras[0], s.camera_truth[0]
        proj = cam.project(s.frame.points[:, :3])
        uv = proj.uv[proj.mask].astype(int)
        rendered = truth.depth[uv[:, 1], uv[:, 0]]
        rel = np.abs(rendered - proj.depth[proj.mask]) / proj.depth[proj.mask]
        assert proj.mask.sum() > 500
        assert np.median(rel) < 0.05
        same_class = truth.classes[uv[:, 1], uv[:, 0]] == s.frame.labels[proj.mask]
        assert same_class.mean() > 0.8


def test_kitti_label_ids_round_trip():
    labels = np.array([-1, 0, 1, 4, 10])
    raw = to_kitti_ids(labels)
    assert raw.tolist() == [0, 10, 18, 40, 81]
    assert from_kitti_ids(raw | (7 << 16)).tolist() == labels.tolist()


def test_bad_camera_name_is_rejected():
    with pytest.raises(ValueError, match="unknown camera"):
        SynthConfig(cameras={"names": ["roof"]})


def test_lidar_sweep_is_deterministic_and_lidar_like():
    """The benchmarks' default scan (moved from relidar/bench/synthetic_scan.py): an HDL-64E on the street,
    the world's own sweep without cameras, sized like a KITTI scan and mostly ground."""
    from relidar.synthetic import lidar_sweep
    from relidar.synthetic.lidar import HDL64E
    from relidar.synthetic.world import LIDAR_MOUNT

    a, b = lidar_sweep(), lidar_sweep()
    np.testing.assert_array_equal(a.points, b.points)
    assert a.points.shape[1] == 4 and a.points.dtype == np.float32 and 80_000 < a.points.shape[0] < 140_000
    assert a.cameras == [] and not np.array_equal(lidar_sweep(seed=1).points[:1000], a.points[:1000])
    world = SyntheticWorld(SynthConfig(lidar=HDL64E, cameras={"names": []})).sample(0).frame
    np.testing.assert_array_equal(a.points, world.points)
    np.testing.assert_array_equal(a.labels, world.labels)
    elevations = np.rad2deg(np.arcsin(a.points[:, 2] / np.linalg.norm(a.points[:, :3], axis=1)))
    beams = np.linspace(-24.8, 2.0, 64)  # HDL-64E; the steepest ones end on the ego car (no return)
    nearest = np.abs(elevations[:, None] - beams[None]).argmin(axis=1)
    np.testing.assert_allclose(elevations, beams[nearest], atol=1e-3)
    assert len(np.unique(nearest)) > 50 and nearest.max() == 63
    ground = np.isin(a.labels, [class_id(n) for n in ("road", "sidewalk", "terrain")])
    assert 0.3 < ground.mean() < 0.95  # mostly ground, plus walls and objects
    assert np.abs(a.points[a.labels == class_id("road"), 2] + LIDAR_MOUNT[2]).max() < 0.2
    assert a.points[:, 2].max() > 0.5
