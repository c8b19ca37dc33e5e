"""Every evaluation ``config.eval`` asks for, on one labelled set (:func:`evaluate_set`) and on the run's
own data and ``eval.ood`` (:func:`evaluate`)."""

from __future__ import annotations

from typing import Callable

import torch

from relidar.core.vocabulary import Vocabulary
from relidar.model.network import Student
from relidar.training.config import DistillConfig
from relidar.training.data import ensure_cache, synthetic_vocabulary
from relidar.training.evaluate.few_shot import evaluate_finetune, evaluate_linear_probe
from relidar.training.evaluate.labelled import EvaluationError, LabelledSet, labelled_set
from relidar.training.evaluate.results import EvaluationResult, SetResult, fraction_tag
from relidar.training.evaluate.zero_shot import evaluate_zero_shot


def resolve_vocabulary(config: DistillConfig) -> Vocabulary:
    """The vocabulary ``config`` names, in the feature space of its cache (through the cache's projection
    when it keeps projected features)."""
    if config.eval.vocabulary:
        return ensure_cache(config.data).project_vocabulary(Vocabulary.load(config.eval.vocabulary))
    if config.data.synthetic is not None:
        return ensure_cache(config.data).project_vocabulary(synthetic_vocabulary(config.data.synthetic))
    raise EvaluationError("eval.vocabulary: no vocabulary given; pass the Vocabulary JSON of the teacher's text "
                          "encoder (eval.vocabulary=PATH), made with `relidar vocabulary build --classes ... --teacher ...`")


def evaluate_set(model: Student, data: LabelledSet, config: DistillConfig, vocabulary: Vocabulary,
                 device: torch.device, keep_predictions: int = 0,
                 phase: Callable[[str], None] = lambda _name: None) -> SetResult:
    """Zero-shot, structural measures, linear probe and fine-tuning on one labelled set."""
    ev, seed = config.eval, config.train.seed
    phase(f"{data.name}: zero-shot")
    zs = evaluate_zero_shot(model, data, vocabulary, device, keep_predictions=keep_predictions,
                            gap_pairs=ev.gap_pairs, seed=seed, knn=ev.knn, teacher_seen_iou=ev.teacher_seen_iou)
    phase(f"{data.name}: linear probe")
    probe = evaluate_linear_probe(model, data, config, vocabulary.num_classes, device, seed)
    finetune = []
    if ev.few_shot.finetune_steps:
        for fraction in ev.few_shot.finetune_fractions:
            phase(f"{data.name}: fine-tuning on {fraction_tag(fraction)}")
            finetune.append(evaluate_finetune(model, data, config, vocabulary.num_classes, device, fraction, seed))
    return SetResult(zero_shot=zs, linear_probe=probe, finetune=tuple(finetune))


def evaluate(model: Student, config: DistillConfig, device: torch.device | str = "cpu",
             vocabulary: Vocabulary | None = None, on_phase: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run every evaluation ``config.eval`` asks for on ``model`` (the run's own data and eval.ood)."""
    device = torch.device(device)
    vocabulary = vocabulary or resolve_vocabulary(config)
    if vocabulary.feature_dim != model.config.out_dim:
        raise EvaluationError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the student emits "
                              f"{model.config.out_dim}-d; use the vocabulary of the teacher it was distilled from")
    phase = on_phase or (lambda _name: None)
    data = labelled_set("in-distribution", config.data, vocabulary, config.eval.max_scans)
    result = evaluate_set(model, data, config, vocabulary, device, config.eval.bev_scans, phase)
    ood = None
    if config.eval.ood is not None:
        other = labelled_set("out-of-distribution", config.eval.ood, vocabulary, config.eval.max_scans)
        for cache in (other.train_cache, other.val_cache):
            if cache.feature_space != data.train_cache.feature_space:
                raise EvaluationError(f"{cache.root} holds {cache.feature_space}, the training cache "
                                      f"{data.train_cache.feature_space}", field="eval.ood",
                                      hint="prepare both with the same teacher and projection")
        ood = evaluate_set(model, other, config, vocabulary, device, 0, phase)
    return EvaluationResult(vocabulary=vocabulary, in_distribution=result, ood=ood)
