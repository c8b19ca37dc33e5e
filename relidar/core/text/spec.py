"""Which text encoder made a vocabulary's embeddings (and which one a bundle ships), as typed data.

A vocabulary is only meaningful with the text tower that embedded its prompts: the node re-encodes
new class names with it, and ``relidar export bundle`` must put the same tower into the bundle. The
spec records what is needed to rebuild that tower, so nothing is recovered by parsing a name:

* ``clip``: an open_clip model by name and pretrained tag (``"none"``: random weights);
* ``simulated``: the synthetic world's simulated encoder, fixed by its dimension, seed, group weight and
  text jitter (``relidar.core.text.simulated``);
* ``named``: any other encoder (a caller-built model, a test encoder), known only by name; a bundle
  cannot be exported from it without saying which CLIP tower to ship.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from relidar.core.config import StrictModel

RANDOM_WEIGHTS = "none"


class ClipTextSpec(StrictModel):
    kind: Literal["clip"] = "clip"
    model: str = Field(..., min_length=1, description="open_clip model name, e.g. ViT-B-16")
    pretrained: str = Field(..., description="open_clip pretrained tag or checkpoint path; 'none' = random weights")
    feature_dim: int = Field(..., ge=1)

    def describe(self) -> str:
        return f"clip {self.model}/{self.pretrained} ({self.feature_dim}-d)"


class SimulatedTextSpec(StrictModel):
    kind: Literal["simulated"] = "simulated"
    feature_dim: int = Field(..., ge=1)
    seed: int = Field(..., ge=0)
    group_weight: float = Field(..., ge=0.0, lt=1.0)
    text_jitter: float = Field(..., ge=0.0)

    def describe(self) -> str:
        return (f"simulated seed {self.seed} ({self.feature_dim}-d, group weight {self.group_weight}, "
                f"text jitter {self.text_jitter})")


class NamedTextSpec(StrictModel):
    kind: Literal["named"] = "named"
    name: str = Field(..., min_length=1)
    feature_dim: int = Field(..., ge=1)

    def describe(self) -> str:
        return f"{self.name} ({self.feature_dim}-d)"


TextEncoderSpec = Annotated[Union[ClipTextSpec, SimulatedTextSpec, NamedTextSpec], Field(discriminator="kind")]
