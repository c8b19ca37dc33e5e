"""Evaluation of a distilled student: zero-shot, few-shot (linear probe, fine-tuning), structural measures.

All scores are on held-out scans (``DataConfig.val``: an official validation split or another street),
in distribution and on another dataset (``eval.ood``: another world and sensor). One module per part:

* :mod:`.labelled`: the labelled sets (training scans for few-shot, held-out ones scored) and the label
  maps (dataset labels matched to vocabulary classes by name; classes the vocabulary lacks ignored);
* :mod:`.outputs`: the student's per-point outputs on one scan;
* :mod:`.zero_shot`: zero-shot scores (all points in the crop, camera-visible ones, the classes the
  teacher sees), with the structural measures taken on the same held-out pairs;
* :mod:`.structure`: the paper's gap, linear CKA, the class-balanced gap, the k-NN label agreement;
* :mod:`.few_shot`: the linear probe on the frozen backbone and fine-tuning;
* :mod:`.results`: the typed results, and the one place that names the summary's and ``report.json``'s keys;
* :mod:`.run`: everything ``config.eval`` asks for (:func:`evaluate`).
"""

from relidar.training.evaluate.few_shot import evaluate_finetune, evaluate_linear_probe, train_linear_probe
from relidar.training.evaluate.labelled import (
    EvaluationError,
    LabelledSet,
    label_map,
    labelled_set,
    spread,
    to_vocabulary_labels,
)
from relidar.training.evaluate.outputs import ScanOutput, scan_output, student_inputs
from relidar.training.evaluate.results import (
    EvaluationResult,
    FinetuneResult,
    KeptScan,
    ProbeResult,
    SetResult,
    StructureResult,
    ZeroShotResult,
    fraction_tag,
)
from relidar.training.evaluate.run import evaluate, evaluate_set, resolve_vocabulary
from relidar.training.evaluate.structure import (
    PairStructure,
    balanced_pick,
    knn_label_agreement,
    linear_cka,
    structural_gap,
)
from relidar.training.evaluate.zero_shot import ZeroShotAccumulator, evaluate_zero_shot, zero_shot_predict

__all__ = [
    "EvaluationError", "EvaluationResult", "FinetuneResult", "KeptScan", "LabelledSet", "PairStructure", "ProbeResult",
    "ScanOutput", "SetResult", "StructureResult", "ZeroShotAccumulator", "ZeroShotResult", "balanced_pick", "evaluate",
    "evaluate_finetune", "evaluate_linear_probe", "evaluate_set", "evaluate_zero_shot", "fraction_tag",
    "knn_label_agreement", "label_map", "labelled_set", "linear_cka", "resolve_vocabulary", "scan_output", "spread",
    "structural_gap", "student_inputs", "to_vocabulary_labels", "train_linear_probe", "zero_shot_predict",
]
