"""Checks that turn bad models, labels and teacher outputs into clear errors before the step they would spoil."""

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor, nn
from transformers import PreTrainedModel

from .losses import IGNORE_INDEX

# Columns the Trainer's collators turn into `labels`.
LABEL_COLUMNS = ("labels", "label", "label_ids")


def num_logits(model: nn.Module) -> int | None:
    """Number of logits per position: the LM head's vocabulary, a classifier's `num_labels` or timm's `num_classes`."""
    model = extract_model_from_parallel(model)
    if isinstance(model, PreTrainedModel):
        head = model.get_output_embeddings()
        return head.weight.shape[0] if head is not None else model.config.num_labels
    return getattr(model, "num_classes", None)


def input_vocab_size(model: nn.Module) -> int | None:
    """Number of token embeddings of a transformers model, `None` for any other module."""
    model = extract_model_from_parallel(model)
    if not isinstance(model, PreTrainedModel):
        return None
    embeddings = model.get_input_embeddings()
    return getattr(embeddings, "num_embeddings", None)


def _column(dataset: Any, name: str) -> pa.ChunkedArray:
    """Column `name` of a `datasets.Dataset` as Arrow, for the rows the dataset holds (its indices applied)."""
    if getattr(dataset, "_indices", None) is None:
        return dataset.data.column(name)
    return dataset.select_columns([name]).with_format("arrow")[:].column(name)


def _flat_values(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.DataType, int]:
    """The scalar values of a column of scalars or (nested) lists, their type, and the list depth."""
    depth = 0
    while pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
        depth += 1
    return column, column.type, depth


def _describe(name: str, value_type: pa.DataType, depth: int) -> str:
    shape = "one value per example" if depth == 0 else f"lists nested {depth} deep"
    return f"column {name!r} ({value_type}, {shape})"


def check_dataset(dataset: Any, student: nn.Module, teacher: nn.Module | None, split: str) -> None:
    """Check a `datasets.Dataset`'s label and token-id columns against the models, before any step runs.

    Label ids must be integers in `[0, number of logits)` or -100 (float labels only for a single-logit regression
    student; multi-label float vectors are refused), and `input_ids` must be below both models' vocabulary sizes.
    Other datasets (torch datasets, iterables) are checked batch by batch by the losses instead.

    Raises:
        ValueError: naming the column, its type or values, and what is expected.
    """
    if not (hasattr(dataset, "data") and hasattr(dataset, "column_names")):
        return
    label_name = next((name for name in LABEL_COLUMNS if name in dataset.column_names), None)
    if label_name is not None:
        _check_labels(_column(dataset, label_name), label_name, num_logits(student), split)
    if "input_ids" in dataset.column_names:
        values, _, _ = _flat_values(_column(dataset, "input_ids"))
        largest = pc.max(values).as_py()
        for role, model in (("student", student), ("teacher", teacher)):
            vocab = input_vocab_size(model) if model is not None else None
            if largest is not None and vocab is not None and largest >= vocab:
                raise ValueError(
                    f"The {split} dataset's column 'input_ids' holds token id {largest}, but the {role} has only "
                    f"{vocab} token embeddings (ids 0..{vocab - 1}): tokenize with the models' own tokenizer."
                )


def _check_labels(column: pa.ChunkedArray, name: str, classes: int | None, split: str) -> None:
    values, value_type, depth = _flat_values(column)
    where = f"The {split} dataset's {_describe(name, value_type, depth)}"
    if pa.types.is_floating(value_type):
        if depth > 0 and classes != 1:
            raise ValueError(
                f"{where} looks like multi-label targets (one float per class); distillation needs one class id per "
                "example (an integer, or -100 for an unlabelled example)."
            )
        if classes != 1:
            raise ValueError(
                f"{where} holds floats, regression targets, but the student has {classes} logits; give class ids "
                "as integers, or use a single-logit student (num_labels=1) with distillation_loss='mse'."
            )
        return
    if not pa.types.is_integer(value_type):
        raise ValueError(f"{where}: expected integer class ids (or -100 for unlabelled positions).")
    labelled = pc.filter(values, pc.not_equal(values, IGNORE_INDEX))
    if classes is None or len(labelled) == 0:
        return
    low, high = pc.min(labelled).as_py(), pc.max(labelled).as_py()
    if low < 0 or high >= classes:
        raise ValueError(
            f"{where} holds ids from {low} to {high}, but the student has {classes} logits: expected ids in "
            f"0..{classes - 1}, or -100 for unlabelled positions."
        )


def check_single_logit(num_classes: int | None, soft_weight: float, divergence: str) -> None:
    """Refuse a softmax divergence on a single logit: its softmax is 1 whatever the logit, so the loss is 0 forever."""
    if num_classes == 1 and soft_weight != 0 and divergence != "mse":
        raise ValueError(
            f"The student has a single logit (num_labels=1), whose softmax is always 1: distillation_loss="
            f"{divergence!r} would be 0 forever. Use distillation_loss='mse' (regression distillation)."
        )


def check_teacher_logits(teacher_logits: Tensor, mask: Tensor | None, step: int) -> Tensor:
    """Raise if the teacher's logits hold NaN or +inf, or are -inf for every class, at a position that counts;
    return their maximum per position `(...)`, which the chunked forward KL then need not compute again.

    A `-inf` logit for some classes is allowed (a masked vocabulary: see `hf_distill.losses.tempered_log_probs`).
    One reduction over the classes and one synchronisation per step.
    """
    maximum = teacher_logits.detach().amax(-1)
    bad = ~torch.isfinite(maximum)  # (...) NaN, +inf, or -inf everywhere
    if mask is not None:
        bad &= mask.bool()
    if not bad.any():
        return maximum
    has_nan = torch.isnan(teacher_logits.detach()).any(-1)[bad].sum().item()
    raise ValueError(
        f"At step {step} the teacher's logits are NaN, +inf or -inf for every class at {int(bad.sum())} of "
        f"{bad.numel() if mask is None else int(mask.sum())} positions ({has_nan} with NaN): the teacher overflowed "
        "(is teacher_dtype='float16' too narrow for it?) or its weights or inputs are broken."
    )
