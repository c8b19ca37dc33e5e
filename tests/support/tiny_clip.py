"""A randomly initialised, tiny open_clip CLIP (ViT image tower + small text tower) for tests: no network."""

from __future__ import annotations


def build_tiny_clip(seed: int = 0, image_size: int = 64, layers: int = 2):
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(layers=layers, width=64, head_width=16, patch_size=16, image_size=image_size),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        )
        # open_clip leaves some parameters at zero/one (biases, LayerNorm); randomise them so a test
        # would notice one of them being skipped.
        with torch.no_grad():
            for name, p in model.visual.named_parameters():
                if name.endswith("bias") or "ln_" in name:
                    p.add_(0.1 * torch.randn_like(p))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def build_tiny_teacher(seed: int = 0, image_size: int = 64):
    from relidar.training.teachers.maskclip import MaskCLIPTeacher

    return MaskCLIPTeacher("tiny-vit", None, "cpu", image_size, model=build_tiny_clip(seed))
