"""Sparse-conv layers against dense torch convolutions; BatchNorm folding; gradients; config and weights files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from support.student_support import randomise_batchnorm

from relidar.bench.spconv_reference import torch_threads
from relidar.core.config import ConfigError, load_config, save_config
from relidar.core.kernel_maps import KernelMaps, NeighbourTables, build_kernel_maps_numpy, build_neighbour_tables_numpy
from relidar.model.network import Student, StudentConfig, count_parameters, fold_batchnorm
from relidar.model.sparse import functional as SF
from relidar.model.weights import WeightsError, load_student, save_student

GRID = (6, 7, 5)


def _small_maps(seed: int = 0, density: float = 0.35, levels: int = 2) -> tuple[np.ndarray, KernelMaps]:
    rng = np.random.default_rng(seed)
    cells = np.argwhere(rng.random(GRID) < density)
    coords = np.ascontiguousarray(np.c_[np.zeros(len(cells), np.int64), cells])
    maps = build_kernel_maps_numpy(coords, GRID, levels)
    return coords, KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], levels)


def _tables(maps: KernelMaps) -> NeighbourTables:
    numpy_maps = KernelMaps.from_tensors([t.numpy() for t in maps.to_tensors()], maps.num_levels)
    tables = build_neighbour_tables_numpy(numpy_maps)
    return NeighbourTables.from_tensors([torch.from_numpy(t) for t in tables.to_tensors()], maps.num_levels)


def _dense(x: torch.Tensor, coords: np.ndarray, shape) -> torch.Tensor:
    d = x.new_zeros((1, x.shape[1], *shape))
    d[0, :, coords[:, 1], coords[:, 2], coords[:, 3]] = x.T
    return d


def _torch_kernel(weight: torch.Tensor, k: int) -> torch.Tensor:
    """ours [k^3, Cin, Cout] -> conv3d's [Cout, Cin, k, k, k]."""
    return weight.permute(2, 1, 0).reshape(weight.shape[2], weight.shape[1], k, k, k)


def test_subm_conv_equals_dense_conv3d_at_active_sites() -> None:
    coords, maps = _small_maps()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(coords), 3, generator=g, dtype=torch.float64)
    w = torch.randn(27, 3, 5, generator=g, dtype=torch.float64)
    ours = SF.subm_conv3d(x, w, maps.subm[0])
    dense = TF.conv3d(_dense(x, coords, GRID), _torch_kernel(w, 3), padding=1)[0]
    ref = dense[:, coords[:, 1], coords[:, 2], coords[:, 3]].T
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_down_and_up_conv_equal_dense_strided_convs() -> None:
    coords, maps = _small_maps(1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(coords), 4, generator=g, dtype=torch.float64)
    wd = torch.randn(8, 4, 6, generator=g, dtype=torch.float64)
    down = SF.down_conv3d(x, wd, maps.down[0], maps.coords[1].shape[0])
    even = [s + s % 2 for s in GRID]  # odd edges: the sparse grid keeps the last half-cell, so pad
    dense_down = TF.conv3d(_dense(x, coords, even), _torch_kernel(wd, 2), stride=2)[0]
    parents = maps.coords[1].numpy()
    torch.testing.assert_close(down, dense_down[:, parents[:, 1], parents[:, 2], parents[:, 3]].T, rtol=0, atol=1e-10)
    wu = torch.randn(8, 6, 2, generator=g, dtype=torch.float64)
    up = SF.up_conv3d(down, wu, maps.down[0], len(coords))
    coarse = _dense(down, parents, [(s + 1) // 2 for s in GRID])
    # conv_transpose3d weight is [Cin, Cout, k, k, k]
    dense_up = TF.conv_transpose3d(coarse, wu.permute(1, 2, 0).reshape(6, 2, 2, 2, 2), stride=2)[0]
    torch.testing.assert_close(up, dense_up[:, coords[:, 1], coords[:, 2], coords[:, 3]].T, rtol=0, atol=1e-10)


def test_table_convs_equal_pair_convs_with_gradients() -> None:
    """The neighbour-table formulation (one gather + one GEMM, hand-written backward) computes the same
    convolutions as the pair lists (themselves checked against dense conv3d above), values and gradients."""
    coords, maps = _small_maps(3, density=0.45)
    tables = _tables(maps)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(len(coords), 3, generator=g, dtype=torch.float64, requires_grad=True)
    coarse = torch.randn(maps.num_voxels(1), 5, generator=g, dtype=torch.float64, requires_grad=True)
    cases = {
        "subm": (x, torch.randn(27, 3, 4, generator=g, dtype=torch.float64, requires_grad=True),
                 lambda x, w: SF.subm_conv3d(x, w, maps.subm[0]),
                 lambda x, w: SF.subm_conv3d_table(x, w, tables.subm[0])),
        "down": (x, torch.randn(8, 3, 5, generator=g, dtype=torch.float64, requires_grad=True),
                 lambda x, w: SF.down_conv3d(x, w, maps.down[0], maps.num_voxels(1)),
                 lambda x, w: SF.down_conv3d_table(x, w, tables.down[0], tables.up[0])),
        "up": (coarse, torch.randn(8, 5, 2, generator=g, dtype=torch.float64, requires_grad=True),
               lambda x, w: SF.up_conv3d(x, w, maps.down[0], len(coords)),
               lambda x, w: SF.up_conv3d_table(x, w, tables.up[0], tables.down[0])),
    }
    for name, (inp, w, pairs_op, table_op) in cases.items():
        out_pairs, out_table = pairs_op(inp, w), table_op(inp, w)
        torch.testing.assert_close(out_table, out_pairs, rtol=0, atol=1e-12, msg=name)
        upstream = torch.randn(out_pairs.shape, generator=g, dtype=torch.float64)
        grads_pairs = torch.autograd.grad(out_pairs, (inp, w), upstream)
        grads_table = torch.autograd.grad(out_table, (inp, w), upstream)
        for a, b in zip(grads_table, grads_pairs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
        assert torch.autograd.gradcheck(table_op, (inp, w)), name


def test_student_on_tables_equals_student_on_pairs() -> None:
    """The whole network, forward and every parameter's gradient, in float64."""
    config = StudentConfig(profile="fast", voxel_size=0.25, out_dim=8)
    torch.manual_seed(0)
    model = Student(config).double().train()
    vx, maps = _cloud_maps(config, seed=6)
    feats = torch.from_numpy(vx.features).double()
    outputs, grads = [], []
    for m in (maps, _tables(maps)):
        model.zero_grad()
        out = model(feats, m)
        (out * torch.linspace(-1, 1, out.shape[1], dtype=torch.float64)).sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-10)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_subm_conv_under_bf16_autocast_sums_in_float32() -> None:
    """A full 3x3x3 block: the middle voxel's centre term is 256 and each of its 26 neighbours adds 1.
    Every term is exact in bf16, but 256 + 1 is not (8-bit mantissa): summed in a bf16 buffer the
    neighbours vanish (256), summed in float32 they all count (282)."""
    cells = np.argwhere(np.ones((3, 3, 3), bool))
    coords = np.c_[np.zeros(27, np.int64), cells]
    maps = build_kernel_maps_numpy(coords, (3, 3, 3), 1)
    pairs = [torch.from_numpy(p) for p in maps.subm[0]]
    w = torch.ones(27, 1, 1)
    w[13] = 256.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SF.subm_conv3d(torch.ones(27, 1), w, pairs)
    middle = int(np.flatnonzero((cells == 1).all(axis=1))[0])
    assert float(out[middle, 0]) == 282.0


@pytest.mark.parametrize("op", ["subm", "down", "subm_table", "down_table"])
def test_sparse_conv_under_bf16_autocast_within_product_rounding(op: str) -> None:
    """Against a float64 reference on the same bf16-rounded operands: the only error left is each
    product's rounding to bf16 (2^-9 relative) -- none from summing the terms."""
    coords, maps = _small_maps(2, density=0.6)
    tables = _tables(maps)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(len(coords), 16, generator=g).bfloat16().float()
    w = torch.randn(27 if op.startswith("subm") else 8, 16, 8, generator=g).bfloat16().float()

    def run(xx: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        if op == "subm":
            return SF.subm_conv3d(xx, ww, maps.subm[0])
        if op == "subm_table":
            return SF.subm_conv3d_table(xx, ww, tables.subm[0])
        if op == "down_table":
            return SF.down_conv3d_table(xx, ww, tables.down[0], tables.up[0])
        return SF.down_conv3d(xx, ww, maps.down[0], maps.coords[1].shape[0])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(x, w)
    assert got.dtype == torch.float32
    ref = run(x.double(), w.double())
    # |error| <= sum over terms of |term| * 2^-9 <= (|x| conv |w|) * 2^-9, per output element
    bound = run(x.double().abs(), w.double().abs()) * 2.0 ** -9
    assert bool(((got.double() - ref).abs() <= bound + 1e-12).all())


def test_devoxelize_gathers_and_zeroes_cropped_points() -> None:
    v = torch.arange(6.0).reshape(3, 2)
    out = SF.devoxelize(v, torch.tensor([2, -1, 0, 2]))
    torch.testing.assert_close(out, torch.tensor([[4.0, 5.0], [0.0, 0.0], [0.0, 1.0], [4.0, 5.0]]))


def _cloud_maps(config: StudentConfig, seed: int = 0, n: int = 1500):
    from relidar.core.voxelize import voxelize

    rng = np.random.default_rng(seed)
    pts = np.c_[rng.uniform(-6, 6, (n, 2)), rng.uniform(-1.5, 1.0, (n, 1)), rng.uniform(0, 1, (n, 1))]
    vx = voxelize(pts.astype(np.float32), config.grid(), config.input_features)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, config.num_levels)
    tmaps = KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], config.num_levels)
    return vx, tmaps


def test_folded_batchnorm_network_matches_eval_network() -> None:
    config = StudentConfig(profile="fast", voxel_size=0.25, out_dim=16)
    torch.manual_seed(0)
    model = Student(config)
    randomise_batchnorm(model, 1)
    model.eval()
    vx, maps = _cloud_maps(config)
    feats = torch.from_numpy(vx.features)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(feats, maps), model(feats, maps), rtol=1e-4, atol=1e-5)
    assert model.backbone.stem[0].conv.bias is None  # the original is untouched


def test_gradients_flow_overfit_tiny_scan() -> None:
    config = StudentConfig(profile="fast", voxel_size=0.5, out_dim=4, input_features=("x", "y", "z", "dz"))
    torch.manual_seed(0)
    model = Student(config)
    vx, maps = _cloud_maps(config, seed=2, n=200)
    feats = torch.from_numpy(vx.features)
    p2v = torch.from_numpy(vx.point_to_voxel)
    inside = p2v >= 0
    target = torch.randn(int(p2v.shape[0]), 4, generator=torch.Generator().manual_seed(3))
    target = target[:, :1].sign().expand(-1, 4) * torch.tensor([1.0, -1.0, 0.5, 0.0])  # learnable per voxel
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    with torch_threads(1):  # tiny tensors: threads only add contention on a shared 2-core box
        for _ in range(30):
            opt.zero_grad()
            out = model.forward_points(feats, maps, p2v)
            loss = ((out[inside] - target[inside]) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_profiles_parameter_counts() -> None:
    base = count_parameters(Student(StudentConfig(profile="base", out_dim=512)).backbone)
    fast = count_parameters(Student(StudentConfig(profile="fast", out_dim=512)).backbone)
    # MinkUNet18 (stem 32, 32/64/128/256, 256/128/96/96, 2 blocks) is ~21.7 M parameters
    assert 20_000_000 < base < 23_000_000
    assert fast < base / 5


def test_config_yaml_roundtrip(tmp_path) -> None:
    config = StudentConfig(profile="fast", voxel_size=0.2, out_dim=768, input_features=("x", "y", "z", "range"))
    path = save_config(config, tmp_path / "student.yaml")
    assert load_config(path, StudentConfig) == config
    with pytest.raises(ConfigError) as err:
        load_config(None, StudentConfig, ["profile=huge"])
    assert err.value.field == "profile"
    path.write_text(path.read_text().replace("voxel_size: 0.2", "voxel_size: -1"))
    with pytest.raises(ConfigError) as err:
        load_config(path, StudentConfig)
    assert (err.value.path, err.value.field) == (path, "voxel_size")


def test_weights_roundtrip_keeps_config_and_outputs(tmp_path) -> None:
    config = StudentConfig(profile="fast", voxel_size=0.25, out_dim=8)
    torch.manual_seed(0)
    model = Student(config)
    randomise_batchnorm(model, 2)
    model.eval()
    path = save_student(model, tmp_path / "student.safetensors")
    loaded = load_student(path).eval()
    assert loaded.config == config
    vx, maps = _cloud_maps(config, seed=4)
    feats = torch.from_numpy(vx.features)
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats, maps), model(feats, maps), rtol=0, atol=0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(WeightsError) as err:
        load_student(tmp_path / "bad.safetensors")
    assert err.value.path == tmp_path / "bad.safetensors" and err.value.hint


def test_traces_to_onnx_and_runs_other_voxel_counts(tmp_path) -> None:
    """No value-dependent control flow: a graph traced on one cloud runs a different-sized one exactly.

    A two-level network with every kind of layer (subm, down, up, 1x1 shortcut, skip concat, head)
    keeps the export quick; the profiles only repeat these layers.
    """
    ort = pytest.importorskip("onnxruntime")
    from relidar.model.network import Architecture, MinkUNet

    config = StudentConfig(profile="fast", voxel_size=0.3, out_dim=8)
    levels = 2
    torch.manual_seed(0)
    backbone = MinkUNet(Architecture(stem=8, encoder=(16,), decoder=(12,), blocks=1), config.in_channels)
    randomise_batchnorm(backbone, 3)
    folded = fold_batchnorm(backbone.eval())

    class Flat(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, features: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
            return self.inner(features, KernelMaps.from_tensors(list(maps), levels))

    def cloud(seed: int, n: int):
        from relidar.core.voxelize import voxelize

        rng = np.random.default_rng(seed)
        pts = np.c_[rng.uniform(-6, 6, (n, 2)), rng.uniform(-1.5, 1.0, (n, 1)), rng.uniform(0, 1, (n, 1))]
        vx = voxelize(pts.astype(np.float32), config.grid(), config.input_features)
        maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, levels)
        return vx, KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], levels)

    vx, maps = cloud(0, 2000)
    names = ["features"] + KernelMaps.tensor_names(levels)
    tensors = [torch.from_numpy(vx.features)] + maps.to_tensors()
    dynamic = {"features": {0: "voxels"}}
    for name in names[1:]:
        dynamic[name] = {1: f"{name}_pairs"} if name.startswith(("subm", "down")) else {0: f"{name}_voxels"}
    path = tmp_path / "student.onnx"
    with torch_threads(1):
        torch.onnx.export(Flat(folded), tuple(tensors), str(path), input_names=names, output_names=["features_out"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    vx2, maps2 = cloud(1, 3500)
    assert vx2.num_voxels != vx.num_voxels
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a tiny graph: threads only add contention on a shared box
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feeds = {n: t.numpy() for n, t in zip(names, [torch.from_numpy(vx2.features)] + maps2.to_tensors()) if n in wanted}
    out = session.run(None, feeds)[0]
    with torch.no_grad():
        ref = folded(torch.from_numpy(vx2.features), maps2)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
