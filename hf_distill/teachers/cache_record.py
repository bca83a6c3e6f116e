"""What a teacher cache records about how it was built, and the check that it still matches what it is used with.

The record is JSON in the cached dataset's `info.description`, so that it survives `save_to_disk` /
`load_from_disk`, `select`, `shuffle` and `concatenate_datasets` of shards that share it. It names the teacher (its
class, `name_or_path` and a SHA-256 of its weights), the input dataset (`_fingerprint`, rows), the input columns the
teacher saw and the preprocessing (collator and dataset format), and what is stored (full logits or top-k, k, dtype).
Each row also carries `teacher_input_hash`, a hash of its own input columns: a cache whose teacher columns were
joined to other rows, or whose inputs were re-tokenized, no longer matches it.
"""

import dataclasses
import hashlib
import json
import pickle
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from ..modeling import (
    CACHED_TEACHER_KEYS,
    CACHED_TEACHER_LOGITS_KEY,
    CACHED_TEACHER_TOPK_INDICES_KEY,
    CACHED_TEACHER_TOPK_VALUES_KEY,
    TEACHER_INPUT_HASH_KEY,
)
from .ensemble import TeacherEnsemble

CACHE_FORMAT = "hf_distill.teacher_cache"
CACHE_FORMAT_VERSION = 1
# Columns that are targets: never hashed as inputs, and never given to the teacher.
LABEL_COLUMNS = ("labels", "label", "label_ids")


class TeacherCacheMismatchError(ValueError):
    """A teacher cache does not match the teacher, rows, preprocessing or top-k it is used with."""


@dataclass
class CacheRecord:
    """What a teacher cache was built from and what it stores (see the module docstring)."""

    teacher_class: str
    teacher_name_or_path: str | None
    teacher_sha256: str
    dataset_fingerprint: str | None
    num_rows: int
    input_columns: list[str]
    preprocessing: str
    top_k: int | None
    dtype: str
    num_classes: int
    per_position: bool
    format: str = CACHE_FORMAT
    version: int = CACHE_FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def read_cache_record(dataset: Any) -> CacheRecord | None:
    """The record of a teacher cache built by `cache_teacher_outputs`, or `None` for any other dataset."""
    try:
        data = json.loads(dataset.info.description or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    if data.get("version") != CACHE_FORMAT_VERSION:
        raise TeacherCacheMismatchError(
            f"The teacher cache has format version {data.get('version')}, this hf_distill reads version "
            f"{CACHE_FORMAT_VERSION}: build the cache again."
        )
    return CacheRecord(**data)


def teacher_sha256(teacher: nn.Module) -> str:
    """SHA-256 over the teacher's `state_dict`: each entry's name, dtype, shape and bytes, in sorted name order.

    Floating-point tensors are hashed as float32, so that a teacher loaded in bfloat16 or float16 hashes as it did
    when cached in that precision; a teacher cast to another precision than it was cached in hashes differently.
    """
    digest = hashlib.sha256()
    state = extract_model_from_parallel(teacher).state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        tensor = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(teacher: nn.Module) -> tuple[str, str | None]:
    """The teacher's class (module and name) and its `name_or_path` (transformers) or `pretrained_cfg` id (timm)."""
    model = extract_model_from_parallel(teacher)
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "default_cfg", {}).get("hf_hub_id")
    return f"{type(model).__module__}.{type(model).__qualname__}", name or None


def describe_preprocessing(data_collator: Any, dataset: Any) -> str:
    """A stable description of how rows became teacher inputs: the collator's class and simple settings (a tokenizer
    by its `name_or_path`) and the dataset's format type (e.g. `torch`)."""
    if data_collator is None:
        collator = "transformers.default_data_collator"
    elif dataclasses.is_dataclass(data_collator):
        settings = {}
        for item in dataclasses.fields(data_collator):
            value = getattr(data_collator, item.name)
            if isinstance(value, (bool, int, float, str, type(None))):
                settings[item.name] = value
            elif dataclasses.is_dataclass(value):
                settings[item.name] = dataclasses.asdict(value)
            elif hasattr(value, "name_or_path"):
                settings[item.name] = f"{type(value).__name__}({value.name_or_path})"
        collator = f"{type(data_collator).__qualname__}({json.dumps(settings, sort_keys=True)})"
    else:
        collator = getattr(data_collator, "__qualname__", type(data_collator).__qualname__)
    return f"collator={collator}; format={dataset.format['type']}"


def teacher_columns(top_k: int | None) -> tuple[str, ...]:
    """The columns of teacher outputs a cache stores: full logits, or the top-k values and indices."""
    if top_k is None:
        return (CACHED_TEACHER_LOGITS_KEY,)
    return (CACHED_TEACHER_TOPK_VALUES_KEY, CACHED_TEACHER_TOPK_INDICES_KEY)


def default_input_columns(dataset: Any) -> list[str]:
    """Every column of `dataset` except labels and teacher-cache columns: what the teacher is given by default."""
    return [name for name in dataset.column_names if name not in LABEL_COLUMNS and name not in CACHED_TEACHER_KEYS]


def row_hashes(dataset: Any, columns: list[str], batch_size: int = 1000) -> np.ndarray:
    """One int64 per row: BLAKE2b (8 bytes) of the pickled values of `columns` in sorted order, read from Arrow (the
    dataset's format and transform are not applied)."""
    names = sorted(columns)
    hashes = []
    for batch in dataset.select_columns(names).with_format("arrow").iter(batch_size=batch_size):
        values = [batch.column(name).to_pylist() for name in names]
        for row in zip(*values, strict=True):
            digest = hashlib.blake2b(pickle.dumps(row, protocol=4), digest_size=8).digest()
            hashes.append(int.from_bytes(digest, "little", signed=True))
    return np.asarray(hashes, dtype=np.int64)


def check_teacher_cache(
    cache: Any,
    teacher: nn.Module | None = None,
    dataset: Any = None,
    data_collator: Any = None,
    top_k: int | None = None,
) -> CacheRecord:
    """Check that a teacher cache matches what it is used with; raise one error naming every part that differs.

    Always checked: the record exists, the input columns are present, each row's `teacher_input_hash` equals the hash
    of its input columns (rows re-tokenized, or teacher columns joined to other rows, fail), and the stored columns
    are those the record states (k included). With `teacher`: its weights' SHA-256 equals the recorded one. With
    `dataset`: its `_fingerprint` equals the recorded one of the input dataset. With `data_collator`: the
    preprocessing description equals the recorded one. With `top_k`: the recorded k equals it.

    Returns:
        The cache's [`CacheRecord`].

    Raises:
        TeacherCacheMismatchError: the cache has no record, or any of the parts above differs.
    """
    record = read_cache_record(cache)
    if record is None:
        raise TeacherCacheMismatchError(
            "The dataset carries no teacher-cache record (in dataset.info.description): build it with "
            "hf_distill.cache_teacher_outputs or `hf-distill cache-teacher`."
        )
    problems = []
    if teacher is not None and teacher_sha256(teacher) != record.teacher_sha256:
        problems.append(
            f"teacher weights: the given teacher ({teacher_identity(teacher)[0]}) is not the one cached "
            f"({record.teacher_class}, {record.teacher_name_or_path}, sha256 {record.teacher_sha256[:12]}...)"
        )
    if dataset is not None and dataset._fingerprint != record.dataset_fingerprint:
        problems.append(
            f"dataset: fingerprint {dataset._fingerprint} differs from the cached dataset's "
            f"{record.dataset_fingerprint}"
        )
    if data_collator is not None:
        given = describe_preprocessing(data_collator, dataset if dataset is not None else cache)
        if given != record.preprocessing:
            problems.append(f"preprocessing: {given!r} differs from the cached {record.preprocessing!r}")
    if top_k is not None and top_k != record.top_k:
        problems.append(f"top_k: {top_k} requested, the cache holds top_k={record.top_k}")
    problems += _stored_column_problems(cache, record)
    missing = [name for name in record.input_columns if name not in cache.column_names]
    if missing:
        problems.append(f"preprocessing: the input columns {missing} the teacher saw are missing")
    elif TEACHER_INPUT_HASH_KEY in cache.column_names:
        stored = np.asarray(cache.with_format("numpy")[TEACHER_INPUT_HASH_KEY], dtype=np.int64)
        differ = int((row_hashes(cache, record.input_columns) != stored).sum())
        if differ:
            problems.append(
                f"dataset: {differ} of {len(stored)} rows' input columns {record.input_columns} are not those the "
                "teacher saw (re-tokenized or otherwise changed rows, or teacher columns joined to another dataset)"
            )
    if problems:
        raise TeacherCacheMismatchError(
            "The teacher cache does not match: " + "; ".join(problems) + ". Build the cache again for this teacher, "
            "data and preprocessing."
        )
    return record


def _stored_column_problems(cache: Any, record: CacheRecord) -> list[str]:
    """The stored teacher columns against the record: the columns of its kind, the hash column, k per position."""
    problems = []
    expected = (*teacher_columns(record.top_k), TEACHER_INPUT_HASH_KEY)
    missing = [name for name in expected if name not in cache.column_names]
    if missing:
        problems.append(f"top_k: the cache (top_k={record.top_k}) lacks the columns {missing}")
    elif record.top_k is not None and len(cache) > 0:
        first = cache.select_columns([CACHED_TEACHER_TOPK_VALUES_KEY]).with_format("numpy")[0]
        width = np.asarray(first[CACHED_TEACHER_TOPK_VALUES_KEY]).shape[-1]
        if width != record.top_k:
            problems.append(
                f"top_k: the stored values hold {width} classes per position, the record says {record.top_k}"
            )
    return problems


def check_cache_for_training(dataset: Any, teacher: nn.Module | None, args: Any) -> None:
    """The trainer's check of a training or evaluation dataset that is a teacher cache (any other passes).

    The cache is checked with :func:`check_teacher_cache` (its rows always; the teacher's weights when a teacher is
    given too, whose outputs the cache then stands in for). A top-k cache needs the soft-target method without logit
    standardization (`args` of `DistillationTrainingArguments`): DKD, DIST and standardization need full logits.
    """
    record = read_cache_record(dataset) if getattr(dataset, "info", None) is not None else None
    if record is None:
        if TEACHER_INPUT_HASH_KEY in (getattr(dataset, "column_names", None) or []):
            raise TeacherCacheMismatchError(
                f"dataset: it has a teacher cache's {TEACHER_INPUT_HASH_KEY!r} column but no record in "
                "info.description (lost by to_iterable_dataset, or replaced), so it cannot be checked; train on the "
                "Dataset that cache_teacher_outputs returned (or load_from_disk reads)."
            )
        return
    if not isinstance(dataset, datasets.Dataset):
        raise TeacherCacheMismatchError(
            f"dataset: a teacher cache is checked row by row as a datasets.Dataset, got a {type(dataset).__name__}; "
            "train on the Dataset that cache_teacher_outputs returned (or load_from_disk reads)."
        )
    if isinstance(teacher, TeacherEnsemble):
        raise TeacherCacheMismatchError(
            "teacher weights: a teacher cache holds one teacher's outputs, and several teachers are given; pass "
            "teacher_model=None (the cache stands in for the teacher) or the one teacher that was cached."
        )
    record = check_teacher_cache(dataset, teacher)
    if record.top_k is not None and (args.distillation_method != "kd" or args.logit_standardization):
        raise ValueError(
            f"A top-k teacher cache (k={record.top_k}) keeps k classes per position: distillation_method="
            f"{args.distillation_method!r} with logit_standardization={args.logit_standardization} needs full "
            "logits. Use distillation_method='kd' without standardization, or a cache of full logits (top_k=None)."
        )
