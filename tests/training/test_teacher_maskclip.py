"""MaskCLIP dense features against a hand-written value-path computation; text tower against open_clip."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from support.tiny_clip import build_tiny_clip  # noqa: E402

from relidar.core.teacher import Teacher, TeacherError  # noqa: E402
from relidar.training.teachers.maskclip import MaskCLIPTeacher  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_tiny_clip(seed=1)


@pytest.fixture(scope="module")
def teacher(model):
    return MaskCLIPTeacher("tiny-vit", None, "cpu", 64, model=model)


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def test_conforms_to_teacher_protocol(teacher):
    assert isinstance(teacher, Teacher)
    assert teacher.feature_dim == 32
    assert "tiny-vit" in teacher.name and "64" in teacher.name


def test_grid_shape_follows_image_and_rows_are_unit(teacher):
    rng = np.random.default_rng(0)
    # Shorter side 50 -> 64 px = 4 patches; longer side 120 * 64/50 = 153.6 px -> round(9.6) = 10 patches.
    image = rng.integers(0, 256, size=(50, 120, 3), dtype=np.uint8)
    feats = teacher.encode_image(image)
    assert feats.shape == (4, 10, 32)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-5)
    tall = teacher.encode_image(rng.integers(0, 256, size=(200, 64, 3), dtype=np.uint8))
    assert tall.shape == (12, 4, 32)


def test_value_path_matches_hand_computation(model, teacher):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # the model's native size: no resize
    pixels = teacher.preprocess(image)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    expected_pixels = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
    torch.testing.assert_close(pixels, expected_pixels)

    visual = model.visual
    with torch.no_grad():
        # open_clip's own forward up to the input of the last block (its normal attention)...
        inter = visual.forward_intermediates(
            pixels, indices=[len(visual.transformer.resblocks) - 2], output_fmt="NLC", output_extra_tokens=True
        )
        x = torch.cat([inter["image_intermediates_prefix"][0], inter["image_intermediates"][0]], dim=1)
        # ...then the last block by hand: value path only, residual, MLP, ln_post, proj.
        block = visual.transformer.resblocks[-1]
        width = x.shape[-1]
        w_in, b_in = block.attn.in_proj_weight, block.attn.in_proj_bias
        v = _layer_norm(x, block.ln_1) @ w_in[2 * width :].T + b_in[2 * width :]
        x = x + (v @ block.attn.out_proj.weight.T + block.attn.out_proj.bias)
        h = _gelu(_layer_norm(x, block.ln_2) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias)
        x = x + (h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias)
        tokens = _layer_norm(x[:, 1:], visual.ln_post) @ visual.proj
        expected = (tokens / tokens.norm(dim=-1, keepdim=True)).reshape(4, 4, -1).numpy()

    np.testing.assert_allclose(teacher.encode_image(image), expected, atol=1e-5)


def test_value_path_differs_from_full_attention(model, teacher):
    """The MaskCLIP path must not silently fall back to the ordinary (attention-mixed) tokens."""
    image = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    pixels = teacher.preprocess(image)
    with torch.no_grad():
        visual = model.visual
        x = visual.transformer(visual._embeds(pixels))
        ordinary = torch.nn.functional.normalize(visual.ln_post(x[:, 1:]) @ visual.proj, dim=-1)
    ours = teacher.encode_image(image).reshape(16, -1)
    assert np.abs(ours - ordinary[0].numpy()).max() > 1e-2


def test_positional_embedding_native_and_interpolated(model, teacher):
    native = teacher.positional_embedding(4, 4)
    assert native is model.visual.positional_embedding
    wide = teacher.positional_embedding(4, 10)
    assert tuple(wide.shape) == (41, 64)
    torch.testing.assert_close(wide[0], model.visual.positional_embedding[0])  # class token untouched


def test_text_embeddings_equal_open_clip(model, teacher):
    prompts = ["a photo of a car.", "a photo of a tree.", "road"]
    ours = teacher.encode_text(prompts)
    with torch.no_grad():
        ref = model.encode_text(open_clip.tokenize(prompts), normalize=True).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_rejects_bad_image(teacher):
    with pytest.raises(TeacherError, match="uint8"):
        teacher.encode_image(np.zeros((10, 10, 3), dtype=np.float32))
