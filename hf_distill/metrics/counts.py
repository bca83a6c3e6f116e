"""Top-1 counts of an evaluation batch, summed over batches and processes, and the metrics they give."""

import torch
from torch import Tensor

from ..terms import DistillationBatch
from ..terms.topk import teacher_top1

COUNT_NAMES = ("correct", "labelled", "teacher_correct", "agreeing", "compared")


def prediction_counts(batch: DistillationBatch) -> Tensor:
    """The counts of :data:`COUNT_NAMES` for one batch, as a float64 tensor `(5,)` that can be summed and reduced.

    Student and teacher correctness are counted over the labelled positions; student-teacher agreement over the
    positions the soft loss covers, labelled or not (every example of a classification batch).
    """
    student_predictions = batch.student_logits.argmax(-1)
    counts = torch.zeros(len(COUNT_NAMES), dtype=torch.float64, device=student_predictions.device)
    if batch.labels is not None:
        counts[0] = (student_predictions == batch.labels)[batch.mask].sum()
        counts[1] = batch.mask.sum()
    if batch.has_teacher:
        teacher_predictions = teacher_top1(batch)
        compared = batch.soft_mask if batch.soft_mask is not None else torch.ones_like(student_predictions, dtype=bool)
        if batch.labels is not None:
            counts[2] = (teacher_predictions == batch.labels)[batch.mask].sum()
        counts[3] = (teacher_predictions == student_predictions)[compared].sum()
        counts[4] = compared.sum()
    return counts


def metrics_from_counts(counts: Tensor, prefix: str = "eval") -> dict[str, float]:
    """`<prefix>_accuracy` and `<prefix>_teacher_accuracy` when labels were seen, `<prefix>_teacher_agreement` when a
    teacher was."""
    correct, labelled, teacher_correct, agreeing, compared = counts.tolist()
    metrics = {}
    if labelled:
        metrics[f"{prefix}_accuracy"] = correct / labelled
        if compared:
            metrics[f"{prefix}_teacher_accuracy"] = teacher_correct / labelled
    if compared:
        metrics[f"{prefix}_teacher_agreement"] = agreeing / compared
    return metrics
