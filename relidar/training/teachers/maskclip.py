"""MaskCLIP dense features from an open_clip Vision Transformer.

CLIP's image embedding is the class token after attention pooling; its patch tokens are not in the
text space. MaskCLIP (Zhou, Loy, Dai, ECCV 2022) observes that the last block's *value* path keeps
each patch's own content: replacing that block's attention (softmax(qk^T) v) by v alone — each token
attends only to itself — and then applying the residual, the MLP, ``ln_post`` and the visual
projection ``proj`` to every patch token gives per-patch features that match CLIP text embeddings.

Images of any size are run whole: the shorter side is resized to ``image_size`` (the longer one to
the nearest multiple of the patch size), and the learned positional embedding is bicubically
interpolated to that patch grid.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from relidar.core.teacher import TeacherError
from relidar.core.text.spec import RANDOM_WEIGHTS, ClipTextSpec, NamedTextSpec, TextEncoderSpec
from relidar.training.teachers.base import PatchGrid

# open_clip's own constants; used when a model carries no preprocess config.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
DEFAULT_IMAGE_SIZE = 448


class MaskCLIPTeacher:
    """A ``Teacher``: dense MaskCLIP image features and text embeddings from one open_clip CLIP model.

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b88k``...) or a checkpoint path, which
    open_clip downloads or loads; ``None``/``"none"`` builds the architecture with random weights
    (benchmarks, offline runs). ``model`` wraps an already built open_clip ``CLIP`` instead (tests,
    custom checkpoints); ``model_name`` then only names it.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        device: str = "cpu",
        image_size: int = DEFAULT_IMAGE_SIZE,
        *,
        model: Any = None,
        batch_size: int = 64,
    ) -> None:
        import open_clip
        import torch

        if pretrained is not None and pretrained.lower() in ("", "none", "random"):
            pretrained = None
        built_here = model is None
        if built_here:
            try:
                model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
            except RuntimeError as exc:
                raise TeacherError(
                    f"could not build open_clip model {model_name!r} with pretrained={pretrained!r}: {exc}. "
                    "Check the name/tag with open_clip.list_pretrained()."
                ) from exc
        if image_size < 1:
            raise TeacherError(f"image_size must be a positive number of pixels, got {image_size}")
        self._torch = torch
        self._model = model.to(device).eval()
        self._device = torch.device(device)
        if built_here:
            self._tokenizer = open_clip.get_tokenizer(model_name)
        else:
            # A model built by the caller has no registered config to look a tokenizer up by.
            self._tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self._model.context_length)
        self._image_size = int(image_size)
        self._batch_size = batch_size
        self._name = f"maskclip/{model_name}/{pretrained or 'random'}/{self._image_size}"
        # A caller-built model cannot be rebuilt from its name: record it by name only.
        self._text_spec: TextEncoderSpec = (
            ClipTextSpec(model=model_name, pretrained=pretrained or RANDOM_WEIGHTS, feature_dim=self.feature_dim)
            if built_here else NamedTextSpec(name=f"maskclip/{model_name}", feature_dim=self.feature_dim))

        visual = self._model.visual
        self._check_architecture(model_name, visual)
        cfg = open_clip.get_model_preprocess_cfg(self._model)
        self._mean = torch.tensor(cfg.get("mean", _OPENAI_MEAN), dtype=torch.float32, device=self._device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", _OPENAI_STD), dtype=torch.float32, device=self._device).view(1, 3, 1, 1)
        self._patch = tuple(int(p) for p in visual.patch_size)
        self._native_grid = tuple(int(g) for g in visual.grid_size)
        self._pos_cache: dict[tuple[int, int], Any] = {}

    @staticmethod
    def _check_architecture(model_name: str, visual: Any) -> None:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        if not isinstance(visual, VisionTransformer):
            raise TeacherError(f"{model_name}: MaskCLIP needs an open_clip VisionTransformer image tower, got {type(visual).__name__}")
        if visual.attn_pool is not None:
            raise TeacherError(f"{model_name}: image towers with an attentional pooler (CoCa) are not supported")
        last = visual.transformer.resblocks[-1]
        if not isinstance(last, ResidualAttentionBlock):
            raise TeacherError(
                f"{model_name}: the last block is {type(last).__name__}; MaskCLIP's value path is implemented for "
                "open_clip's default ResidualAttentionBlock (nn.MultiheadAttention)"
            )

    # --- Teacher protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def feature_dim(self) -> int:
        return int(self._model.visual.proj.shape[1])

    @property
    def text_spec(self) -> TextEncoderSpec:
        return self._text_spec

    @property
    def image_size(self) -> int:
        return self._image_size

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """[h, w, D] float32 unit-norm MaskCLIP features of one HxWx3 uint8 RGB image."""
        return self.encode_images([self._image_tensor(image)])[0].cpu().numpy()

    # --- BatchTeacher (online mode) ----------------------------------------------------------

    @property
    def patch_grid(self) -> PatchGrid:
        return PatchGrid(self._image_size, self._patch)

    @property
    def device(self) -> Any:
        return self._device

    def encode_images(self, images: Sequence[Any]) -> list[Any]:
        """[h, w, D] float32 unit-norm features (tensors on the teacher's device) of HxWx3 uint8 RGB image
        tensors; images of the same size run through the ViT together, in chunks of ``batch_size``."""
        torch = self._torch
        out: list[Any] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
                raise TeacherError(f"encode_images needs HxWx3 uint8 RGB images, got shape {tuple(image.shape)} "
                                   f"dtype {image.dtype}")
            groups.setdefault(tuple(image.shape), []).append(i)
        with torch.inference_mode():
            for members in groups.values():
                for lo in range(0, len(members), self._batch_size):
                    chunk = members[lo:lo + self._batch_size]
                    pixels = torch.stack([images[i] for i in chunk]).to(self._device, non_blocking=True)
                    feats = self.dense_features(self._preprocess_batch(pixels)).float()
                    for i, f in zip(chunk, feats):
                        out[i] = f
        return out

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32 unit-norm text embeddings (open_clip's ``encode_text``, normalised)."""
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(prompts), self._batch_size):
                tokens = self._tokenizer(list(prompts[i : i + self._batch_size])).to(self._device)
                out.append(self._model.encode_text(tokens, normalize=True).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out, axis=0)

    # --- the pieces, exposed for tests and batching ----------------------------------------

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h, w) for an image of ``height`` x ``width``: shorter side -> ``image_size``."""
        return self.patch_grid.shape(height, width)

    def _image_tensor(self, image: np.ndarray) -> Any:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TeacherError(f"encode_image needs an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
        return self._torch.from_numpy(np.array(image, copy=True))

    def preprocess(self, image: np.ndarray) -> Any:
        """HxWx3 uint8 RGB -> [1,3,gh*p,gw*p] float tensor, resized per axis and CLIP-normalised."""
        return self._preprocess_batch(self._image_tensor(image)[None].to(self._device))

    def _preprocess_batch(self, images: Any) -> Any:
        """[B,H,W,3] uint8 tensor on the device -> [B,3,gh*p,gw*p] float, resized per axis and CLIP-normalised."""
        gh, gw = self.grid_shape(int(images.shape[1]), int(images.shape[2]))
        size = (gh * self._patch[0], gw * self._patch[1])
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != size:
            x = self._torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def positional_embedding(self, gh: int, gw: int) -> Any:
        """[1 + gh*gw, width]: the class token's embedding and the patch grid's, interpolated if needed."""
        key = (gh, gw)
        if key not in self._pos_cache:
            torch = self._torch
            pos = self._model.visual.positional_embedding
            if key == self._native_grid:
                self._pos_cache[key] = pos
            else:
                h0, w0 = self._native_grid
                grid = pos[1:].reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
                grid = torch.nn.functional.interpolate(grid.float(), size=key, mode="bicubic", align_corners=False)
                grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(gh * gw, -1)
                self._pos_cache[key] = torch.cat([pos[:1], grid], dim=0)
        return self._pos_cache[key]

    def dense_features(self, pixels: Any) -> Any:
        """[B,3,H,W] preprocessed pixels -> [B, H/p, W/p, D] unit-norm MaskCLIP features (a tensor)."""
        torch = self._torch
        F = torch.nn.functional
        visual = self._model.visual
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        b, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, width).expand(b, 1, width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(gh, gw).to(x.dtype)
        x = visual.ln_pre(x)  # patch dropout is the identity in eval mode and is skipped

        transformer = visual.transformer
        blocks = transformer.resblocks
        # The image tower attends without a mask (open_clip passes attn_mask=None for it).
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not transformer.batch_first:
            x = x.transpose(0, 1)

        last = blocks[-1]
        attn = last.attn
        if attn.in_proj_weight is not None:
            w_v = attn.in_proj_weight[2 * width :]
        else:
            w_v = attn.v_proj_weight
        b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        # Each token attends only to itself: the attention output is out_proj(v); heads split and
        # re-join v without mixing, so they need no separate handling.
        v = F.linear(last.ln_1(x), w_v, b_v)
        x = x + last.ls_1(attn.out_proj(v))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        tokens = visual.ln_post(x[:, 1:])
        feats = tokens @ visual.proj
        feats = F.normalize(feats.float(), dim=-1)
        return feats.reshape(b, gh, gw, -1)
