"""A cache's rows for a data loader: the inputs as the dataset formats them, the teacher's stored outputs as NumPy
views of the Arrow buffers that hold them.

`datasets` reads a nested list column as Python lists (or copies it into NumPy with its `"numpy"` and `"torch"`
formats). For the full logits of a causal LM, 16 million numbers per example of 512 tokens at V = 32,000, building
and converting those lists took about 4.7 s per batch of two, ten times the training step.
:class:`CachedTeacherRows` takes each row's slice of the stored buffers instead, without a copy, and
:class:`~hf_distill.teachers.CachedTeacherCollator` copies it once, into the padded batch.
"""

from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from ..modeling import CACHED_TEACHER_OUTPUT_KEYS


class CachedTeacherRows(torch.utils.data.Dataset):
    """`dataset` (a teacher cache) as a map-style dataset whose rows hold its input columns in the dataset's format
    and the stored teacher columns as read-only NumPy views: `(W,)` per example, or `(L_i, W)` for token-level
    outputs. The trainer's data loaders read caches through it (see :func:`cached_teacher_rows`)."""

    def __init__(self, dataset: datasets.Dataset, keys: list[str]):
        self.keys = list(keys)
        self.inputs = dataset.remove_columns(self.keys)
        self.outputs = dataset.select_columns(self.keys).with_format("arrow")

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        indices = list(indices)
        rows = self.inputs.__getitems__(indices)
        table = self.outputs[indices]  # the rows' slices of the stored table
        for key in self.keys:
            for row, values in zip(rows, row_arrays(table.column(key)), strict=True):
                row[key] = values
        return rows


def row_arrays(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Each row of a stored teacher column as a NumPy view of its buffer: `(W,)` for a fixed-size list, `(L_i, W)`
    for a list of fixed-size lists."""
    arrays = []
    for chunk in column.chunks:
        token_level = pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)
        width = (chunk.type.value_type if token_level else chunk.type).list_size
        for i in range(len(chunk)):
            values = chunk.slice(i, 1).flatten()  # the row's fixed-size lists, or its values
            if token_level:
                values = values.flatten()
            flat = values.to_numpy(zero_copy_only=True)
            arrays.append(flat.reshape(-1, width) if token_level else flat)
    return arrays


def cached_teacher_rows(dataset: Any) -> Any:
    """`dataset` as :class:`CachedTeacherRows` where it is a `datasets.Dataset` with teacher columns stored as a
    cache stores them (fixed-size lists per example or per position, see :mod:`~hf_distill.teachers.cache_columns`);
    any other dataset, or teacher columns of another type (a user's lists of floats), as they are."""
    if not isinstance(dataset, datasets.Dataset):
        return dataset
    types = dataset.data.schema
    keys = [key for key in CACHED_TEACHER_OUTPUT_KEYS if key in types.names and _stored(types.field(key).type)]
    return CachedTeacherRows(dataset, keys) if keys else dataset


def _stored(kind: pa.DataType) -> bool:
    """Whether `kind` is a cache's layout: a fixed-size list of numbers, or a list of them."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    return pa.types.is_fixed_size_list(kind) and (
        pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)
    )
