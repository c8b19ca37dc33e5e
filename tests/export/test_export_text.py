"""Text encoders for the runtime: the CLIP text tower through ONNX + the runtime tokenizer against the
PyTorch tower (random small open_clip model), in a bundle; the simulated encoder against the
synthetic world's teacher."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("onnxruntime")

from support.tiny_clip import build_tiny_clip  # noqa: E402

from relidar.core.text.clip_onnx import ClipOnnxTextEncoder  # noqa: E402
from relidar.core.text.tokenizer import ClipTokenizer  # noqa: E402
from relidar.core.vocabulary import embed_classes  # noqa: E402
from relidar.export.onnx_text import export_text_onnx, run_torch_text  # noqa: E402

PROMPTS = ["a photo of a car.", "a street scene with a pedestrian.", "traffic cone", "a dashcam photo of a bus.",
           "", "a photo of a " + "very " * 90 + "long truck."]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(seed=2)


def test_text_onnx_matches_pytorch(tiny, tmp_path) -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    path = export_text_onnx(tiny, tmp_path / "text.onnx", ClipTokenizer(default_bpe())(PROMPTS[:2]))
    encoder = ClipOnnxTextEncoder(path, default_bpe(), 77, 32, batch_size=4)  # batches of 4: prompt count is dynamic
    ours = encoder.encode_text(PROMPTS)
    reference = run_torch_text(tiny, SimpleTokenizer()(PROMPTS).numpy())
    assert ours.shape == (len(PROMPTS), 32)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_clip_bundle_reencodes_classes(tiny, tmp_path) -> None:
    """A bundle with a CLIP text encoder: set_classes embeds prompts exactly as open_clip in PyTorch would."""
    import open_clip

    from relidar.core.segmenter import Segmenter
    from relidar.core.text.spec import ClipTextSpec, NamedTextSpec
    from relidar.core.vocabulary import Vocabulary
    from relidar.export.bundle import ClipTextExport, write_bundle
    from relidar.model.network import Student, StudentConfig

    def torch_encode(prompts):
        tokens = open_clip.tokenizer.SimpleTokenizer()(list(prompts))
        with torch.no_grad():
            return tiny.encode_text(tokens, normalize=True).numpy()

    templates = ("a photo of a {}.", "a {} on the road.")
    synonyms = (("car",), ("road", "street"))
    vocab = Vocabulary(("car", "road"), synonyms, np.array([[255, 0, 0], [0, 0, 255]], np.uint8),
                       embed_classes(synonyms, templates, torch_encode), templates,
                       NamedTextSpec(name="maskclip/tiny", feature_dim=32))
    torch.manual_seed(0)
    student = Student(StudentConfig(profile="fast", out_dim=32, voxel_size=0.4))
    spec = ClipTextSpec(model="tiny", pretrained="none", feature_dim=32)
    root = write_bundle(tmp_path / "clip_bundle", student, vocab, ClipTextExport(tiny, spec))
    seg = Segmenter(root, backend="onnxruntime")
    assert seg.bundle.manifest.text_encoder.spec == spec
    assert (root / "text" / "bpe_simple_vocab_16e6.txt.gz").is_file()
    seg.set_classes(["road", "bus"])
    want = embed_classes((("road", "street"), ("bus",)), templates, torch_encode)
    np.testing.assert_allclose(seg.vocabulary.embeddings, want, atol=1e-5)
    assert seg.vocabulary.class_names == ("road", "bus")
    np.testing.assert_array_equal(seg.vocabulary.colors[0], [0, 0, 255])  # known class keeps its colour


def test_simulated_encoder_equals_synthetic_teacher() -> None:
    from relidar.synthetic.teacher import CONCEPTS, SimulatedTeacher, SimulatedTeacherConfig, synthetic_text_encoder

    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=48, seed=5))
    encoder = synthetic_text_encoder(48, seed=5)
    prompts = ["a photo of a car.", "a person riding a bicycle", "traffic-sign", "a banana", "THE ROAD!"]
    prompts += [f"a blurry photo of a {c.name}." for c in CONCEPTS]
    np.testing.assert_allclose(encoder.encode_text(prompts), teacher.encode_text(prompts), atol=1e-6)


def test_simulated_encoder_round_trip(tmp_path) -> None:
    from relidar.core.text.simulated import SimulatedEncoderError, SimulatedTextEncoder
    from relidar.synthetic.teacher import synthetic_text_encoder

    encoder = synthetic_text_encoder(16, seed=1)
    json_path, _ = encoder.save(tmp_path / "sim.json")
    loaded = SimulatedTextEncoder.load(json_path)
    assert loaded.spec == encoder.spec
    np.testing.assert_array_equal(loaded.encode_text(["a car", "xyz"]), encoder.encode_text(["a car", "xyz"]))
    (tmp_path / "sim.npy").unlink()
    with pytest.raises(SimulatedEncoderError) as err:
        SimulatedTextEncoder.load(json_path)
    assert err.value.path == tmp_path / "sim.npy"


def test_text_encoder_for_rebuilds_from_the_typed_spec() -> None:
    """The vocabulary's spec, not a name, says which encoder a bundle ships; an encoder relidar cannot
    rebuild is refused unless a CLIP model is named."""
    from relidar.core.text.spec import NamedTextSpec
    from relidar.core.vocabulary import Vocabulary
    from relidar.export.bundle import BundleError, text_encoder_for
    from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
    from relidar.training.text_embeddings import build_vocabulary, simulated_text_encoder, synthetic_class_specs

    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=24, seed=7, group_weight=0.3, text_jitter=0.0))
    vocab = build_vocabulary(synthetic_class_specs(), ("a {}.",), teacher, teacher.text_spec)
    rebuilt = text_encoder_for(vocab, simulated=simulated_text_encoder)
    assert rebuilt.spec == teacher.text_spec
    prompts = ["a photo of a car.", "a tree", "a banana"]
    np.testing.assert_array_equal(rebuilt.encode_text(prompts), teacher.encode_text(prompts))
    named = Vocabulary(vocab.class_names, vocab.synonyms, vocab.colors, vocab.embeddings, vocab.templates,
                       NamedTextSpec(name="my-encoder", feature_dim=24))
    with pytest.raises(BundleError) as err:
        text_encoder_for(named, simulated=simulated_text_encoder)
    assert err.value.field == "encoder" and "--clip-model" in err.value.hint
