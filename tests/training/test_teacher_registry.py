"""One teacher registry: the kinds both CLI commands take, the teacher each kind builds, its default templates."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.teacher import Teacher, TeacherError
from relidar.core.vocabulary import DEFAULT_TEMPLATES
from relidar.synthetic.teacher import DEFAULT_TEMPLATES as SYNTHETIC_TEMPLATES
from relidar.synthetic.teacher import ColourTeacher, MaskTeacher, SimulatedTeacher, SimulatedTeacherConfig
from relidar.synthetic.truth import TruthStore
from relidar.training.teachers.registry import TeacherKind, build_teacher, default_templates


def test_both_commands_take_the_registry_kinds() -> None:
    from relidar.cli import prepare, vocabulary

    assert prepare.TeacherKind is vocabulary.TeacherKind is TeacherKind
    assert [k.value for k in TeacherKind] == ["maskclip", "synthetic"]


def test_synthetic_kind_builds_the_version_its_options_name() -> None:
    truth = TruthStore()
    v2 = build_teacher("synthetic", synthetic={"feature_dim": 32, "seed": 2}, truth=truth)
    assert type(v2) is MaskTeacher and v2.truth is truth and isinstance(v2, Teacher)
    reference = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=32, seed=2))
    assert v2.name == reference.name
    np.testing.assert_array_equal(v2.encode_text(["a photo of a car."]), reference.encode_text(["a photo of a car."]))
    v1 = build_teacher(TeacherKind.synthetic, synthetic=SimulatedTeacherConfig(version=1, feature_dim=8))
    assert type(v1) is ColourTeacher and v1.feature_dim == 8


def test_default_templates_per_kind() -> None:
    assert default_templates("synthetic") == SYNTHETIC_TEMPLATES
    assert default_templates(TeacherKind.maskclip) == DEFAULT_TEMPLATES != SYNTHETIC_TEMPLATES


def test_bad_kinds_and_options_name_their_field() -> None:
    for kind, options, field in (("dino", None, "teacher"), ("maskclip", {"feature_dim": 64}, "synthetic_option"),
                                 ("synthetic", {"version": 3}, "version")):
        with pytest.raises(TeacherError) as info:
            build_teacher(kind, synthetic=options)
        assert info.value.field == field, info.value.one_line()
