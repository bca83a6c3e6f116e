"""Teacher outputs as Arrow columns of a cache, and back into padded batch tensors for training.

Per example, a cache stores `(C,)` for classification or `(L_i, C)` for token-level models, where `L_i` is the
example's own length (the positions its `attention_mask` marks in the batch the teacher saw; padding is not stored)
and `C` is the number of classes (full logits) or k (top-k). Floats are stored as Arrow float32 or float16;
bfloat16, which Arrow cannot hold, is stored as its bit pattern in int16 and read back by
the collator (:class:`CachedTeacherCollator`). Top-k indices are int32.
"""

import math
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from ..modeling import (
    CACHED_TEACHER_LOGITS_KEY,
    CACHED_TEACHER_TOPK_INDICES_KEY,
    CACHED_TEACHER_TOPK_VALUES_KEY,
    TEACHER_INPUT_HASH_KEY,
)

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_VALUE_KEYS = (CACHED_TEACHER_LOGITS_KEY, CACHED_TEACHER_TOPK_VALUES_KEY)


def to_storage(values: Tensor, dtype: str) -> np.ndarray:
    """Float values as the numpy array a cache stores: float32, float16, or bfloat16 bits as int16."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}.")
    values = values.detach().to(STORAGE_DTYPES[dtype]).cpu()
    return values.view(torch.int16).numpy() if dtype == "bfloat16" else values.numpy()


def example_positions(batch: dict[str, Any], num_examples: int, length: int | None) -> list[Tensor | None]:
    """For each example of a collated batch, the positions that are its own tokens (`attention_mask == 1`, in order,
    for right or left padding), or `None` for all positions (no attention mask, or classification)."""
    mask = batch.get("attention_mask") if length is not None else None
    if mask is None:
        return [None] * num_examples
    mask = torch.as_tensor(mask)
    if mask.shape != (num_examples, length):
        raise ValueError(
            f"The batch's attention_mask has shape {tuple(mask.shape)}, the teacher's outputs ({num_examples}, "
            f"{length}, ...): cannot tell each example's own positions."
        )
    return [row.nonzero().squeeze(-1) for row in mask.bool()]


def as_run(positions: Tensor) -> slice | Tensor:
    """`positions` (ascending, as :func:`example_positions` gives them) as a `slice` where they are one run (right
    or left padding), so that indexing with them takes a view rather than a copy; else as they are."""
    if positions.numel() and int(positions[-1]) - int(positions[0]) + 1 == positions.numel():
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def nested_array(rows: list[np.ndarray]) -> pa.Array:
    """Arrow array of per-example arrays `(W,)` (a list of W values) or `(L_i, W)` (a list of lists of W values)."""
    width = rows[0].shape[-1]
    flat = pa.array(np.concatenate([row.reshape(-1) for row in rows]) if rows else np.zeros(0))
    inner = pa.FixedSizeListArray.from_arrays(flat, width)
    if rows[0].ndim == 1:
        return inner
    offsets = np.concatenate([[0], np.cumsum([row.shape[0] for row in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _padded_batch(rows: list[Any], batch: dict[str, Any], pad: Tensor) -> Tensor:
    """Per-example `(W,)` or `(L_i, W)` rows (arrays, tensors or lists) as one `(B, W)` or `(B, L, W)` tensor of
    `pad`'s dtype, each `(L_i, W)` copied once to its example's own positions of the padded batch (see
    :func:`example_positions`); other positions hold `pad` `(W,)`."""
    rows = [_read_only_tensor(row) for row in rows]
    if rows[0].dim() == 1:
        return torch.stack(rows).to(pad.dtype)
    reference = batch.get("input_ids", batch.get("attention_mask"))
    lengths = {row.shape[0] for row in rows}
    if reference is None or batch.get("attention_mask") is None:
        if len(lengths) > 1:
            raise ValueError(
                f"Cached teacher outputs of {sorted(lengths)} positions in one batch, and no attention_mask to place "
                "them: collate with the padding the teacher saw (one that returns attention_mask)."
            )
        return torch.stack(rows).to(pad.dtype)
    length = torch.as_tensor(reference).shape[1]
    out = torch.empty((len(rows), length, pad.shape[0]), dtype=pad.dtype)
    for i, (row, positions) in enumerate(zip(rows, example_positions(batch, len(rows), length), strict=True)):
        if positions.numel() != row.shape[0]:
            raise ValueError(
                f"Example {i} of the batch has {positions.numel()} attended positions but {row.shape[0]} cached "
                "teacher positions: the data was tokenized or truncated differently from the data the teacher saw."
            )
        run = as_run(positions)
        if isinstance(run, slice):  # the padding around one run, then the run: each position written once
            out[i, : run.start], out[i, run.stop :] = pad, pad
            out[i, run].copy_(row)
        else:
            out[i] = pad
            out[i, positions] = row.to(pad.dtype)
    return out


def _read_only_tensor(row: Any) -> Tensor:
    """`row` as a tensor, sharing the memory of a NumPy view of a cache's buffers (which is read, never written: torch
    would warn that it cannot mark the tensor read-only)."""
    if not isinstance(row, np.ndarray):
        return torch.as_tensor(row)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(row)


class CachedTeacherCollator:
    """Wraps a collator: takes the cached teacher columns out of the features, collates the rest with it, and adds
    them back as padded tensors (values as float32). The per-row input hash is dropped (the trainer checked it)."""

    def __init__(self, collator: Any):
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [key for key in (*_VALUE_KEYS, CACHED_TEACHER_TOPK_INDICES_KEY) if key in features[0]]
        if not keys and TEACHER_INPUT_HASH_KEY not in features[0]:
            return self.collator(features)
        hidden = (*keys, TEACHER_INPUT_HASH_KEY)
        cached = {key: [feature[key] for feature in features] for key in keys}
        batch = self.collator([{k: v for k, v in feature.items() if k not in hidden} for feature in features])
        for key, rows in cached.items():
            first = np.asarray(rows[0])
            if key == CACHED_TEACHER_TOPK_INDICES_KEY:
                # Distinct ids at padding: a valid top-k, masked out anyway.
                batch[key] = _padded_batch(rows, batch, torch.arange(first.shape[-1]))
                continue
            # Padding positions (never counted by the loss) hold a valid distribution: uniform over the k kept
            # classes for top-k log-probabilities, zeros for logits.
            fill = -math.log(first.shape[-1]) if key == CACHED_TEACHER_TOPK_VALUES_KEY else 0.0
            if np.issubdtype(first.dtype, np.floating):  # float32 or float16, read as float32 in the one copy
                batch[key] = _padded_batch(rows, batch, torch.full(first.shape[-1:], fill))
            else:  # bfloat16 bits
                bits = torch.full(first.shape[-1:], fill, dtype=torch.bfloat16).view(torch.int16)
                batch[key] = _padded_batch(rows, batch, bits).view(torch.bfloat16).float()
        return batch


def cached_teacher_collator(collator: Any) -> Any:
    """`collator` wrapped in a [`CachedTeacherCollator`] (once)."""
    return collator if isinstance(collator, CachedTeacherCollator) else CachedTeacherCollator(collator)
