"""The two settings of a comparison: both students on the same labelled data, and a transfer set.

- **same data**: the student from scratch and the distilled student both train on the whole labelled training set.
- **transfer set**: only a class-stratified part of the training set keeps its labels. The student from scratch
  trains on that part; the distilled student on that part plus the rest without labels (label -100, which the
  trainer gives the soft loss only). The teacher is the one trained on the whole labelled set.

Within a setting both students train for the same number of optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .statistics import paired_entry

SAME_DATA = "same_data"
TRANSFER_SET = "transfer_set"
SETTING_TITLES = {SAME_DATA: "same data", TRANSFER_SET: "transfer set"}
IGNORE_INDEX = -100


def training_labels(dataset: Any) -> np.ndarray:
    """The `labels` column of a `datasets.Dataset`, read without its transform (shape (N,))."""
    if not hasattr(dataset, "with_format") or "labels" not in getattr(dataset, "column_names", []):
        raise ValueError(
            "The transfer-set setting needs a `datasets.Dataset` training set with a `labels` column; got "
            f"{type(dataset).__name__}."
        )
    return np.asarray(dataset.with_format(None)["labels"])


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` rows with the class proportions of `labels` (at least one per class), fixed by `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts / counts.sum() * n
    per_class = np.minimum(np.maximum(1, np.floor(quota)).astype(int), counts)
    for c in np.argsort(per_class - quota)[: max(0, n - per_class.sum())]:  # largest remainders round up
        per_class[c] = min(per_class[c] + 1, counts[c])
    keep = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    return np.sort(np.concatenate(keep))


def without_labels(dataset: Any, labelled: np.ndarray) -> Any:
    """`dataset` with the label of every row outside `labelled` set to -100: same rows, order and transform."""
    labels = training_labels(dataset).astype(np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[labelled] = False
    labels[mask] = IGNORE_INDEX
    form = dataset.format
    # the transform is set aside while the column is replaced: it may need columns that are removed meanwhile
    plain = dataset.with_format(None).remove_columns("labels").add_column("labels", labels.tolist())
    return plain.with_format(
        form["type"], columns=form["columns"], output_all_columns=form["output_all_columns"], **form["format_kwargs"]
    )


@dataclass
class TransferSplit:
    """One seed's transfer set: the labelled part (the scratch student's data) and the whole set with only that
    part labelled (the distilled student's data)."""

    labelled: Any
    transfer: Any

    @property
    def labelled_examples(self) -> int:
        return len(self.labelled)

    @property
    def unlabelled_examples(self) -> int:
        return len(self.transfer) - len(self.labelled)


def transfer_split(dataset: Any, labelled_fraction: float, seed: int) -> TransferSplit:
    """Keep the labels of a class-stratified `labelled_fraction` of `dataset` (at least one example per class)."""
    labels = training_labels(dataset)
    n = max(int(round(labelled_fraction * len(labels))), len(np.unique(labels)))
    labelled = stratified_indices(labels, n, seed)
    return TransferSplit(dataset.select(labelled.tolist()), without_labels(dataset, labelled))


def setting_entry(
    setting: str,
    runs: dict[str, list[dict[str, Any]]],
    labelled_examples: int,
    unlabelled_examples: int,
    max_steps: int,
    teacher_accuracy: float,
    eval_examples: int,
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's entry for one setting: sizes, budget, per-seed accuracies and the paired difference.

    `scratch_train_examples` / `distilled_train_examples` are what each student trains on: the labelled examples,
    and for the distilled student the unlabelled ones too. `method` is the distilled students' method as
    `DistillationMethod.describe` states it.
    """
    return {
        "setting": setting,
        "title": SETTING_TITLES.get(setting, setting),
        "labelled_examples": labelled_examples,
        "unlabelled_examples": unlabelled_examples,
        "scratch_train_examples": labelled_examples,
        "distilled_train_examples": labelled_examples + unlabelled_examples,
        "max_steps": max_steps,
        "teacher": teacher_accuracy,
        "eval_examples": eval_examples,
        "method": method,
        **paired_entry(runs),
    }
