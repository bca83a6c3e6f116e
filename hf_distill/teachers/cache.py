"""Offline teacher outputs: run the teacher once over a dataset and keep its outputs as Arrow columns.

Training from the cache loads no teacher: pass the returned dataset as the trainer's `train_dataset` (with
`teacher_model=None`, or the same teacher, whose weights are then checked against the cache).

Full logits (`teacher_logits`) suit small label spaces (classification: C floats per example). For large vocabularies
and token-level models, `top_k=k` keeps per position the k largest log-probabilities at temperature 1
(`teacher_topk_values`) and their class ids (`teacher_topk_indices`); the trainer then takes the soft loss on that
support with :func:`hf_distill.losses.topk_soft_target_loss` (the tail: `DistillationTrainingArguments.topk_tail`).
For a causal LM, cache the unshifted positions the model sees (the trainer applies the causal shift to the cached
outputs as to live ones) with the collator the student will train with (e.g. `DataCollatorForLanguageModeling(tok,
mlm=False)`): only each example's own positions are stored, and training places them back by the attention mask.
Pad on the right, or give `position_ids`: a left-padded GPT-2 without them gives each example outputs that depend on
the padding of the batch it was in, which no per-example cache can reproduce.

Measured error of the top-k loss against the full loss (relative error of the value / of the gradient w.r.t. the
student logits, T = 1, tail `"bucket"`, a tiny GPT-2 with V = 4096 trained by `python benchmarks/topk_error.py`,
which prints the full table): k = 8: 0.61 / 0.26, k = 32: 0.48 / 0.19, k = 128: 0.35 / 0.10 for a student early in
training. The gradient, which is what trains the student, is closer than the value; see the README.
"""

import os
import shutil
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable
from torch import nn
from torch.utils.data import DataLoader
from transformers import default_data_collator

from ..modeling import TEACHER_INPUT_HASH_KEY, teacher_forward
from .cache_columns import STORAGE_DTYPES, as_run, example_positions, nested_array, to_storage
from .cache_record import (
    CacheRecord,
    default_input_columns,
    describe_preprocessing,
    read_cache_record,
    row_hashes,
    teacher_columns,
    teacher_identity,
    teacher_sha256,
)
from .cache_transforms import check_no_random_transform

SHARDS_FOLDER = "shards"


def cache_teacher_outputs(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    top_k: int | None = None,
    batch_size: int = 32,
    dtype: str | None = None,
    data_collator: Any = None,
    input_columns: list[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    accelerator: Accelerator | PartialState | None = None,
) -> datasets.Dataset:
    """Run `teacher` once over `dataset` (inference mode, batched, in order) and return `dataset` plus its outputs.

    Args:
        teacher: any model `DistillationTrainer` takes as a teacher (transformers, timm or a plain `nn.Module`).
        dataset: a `datasets.Dataset` of model-ready rows (tokenized text, tensorised images). A transform set with
            `set_transform` / `with_transform` is refused: it runs anew at every access, and a random one (crops,
            flips) shows the student other views than the teacher saw; apply deterministic preprocessing with
            `map` first.
        top_k: `None` stores the full logits; k stores the top-k log-probabilities and class ids per position.
        batch_size: examples per teacher forward pass.
        dtype: storage of the values, `"float32"` (default), `"float16"` or `"bfloat16"` (Arrow has no bfloat16: its
            bits are stored as int16 and read back by the trainer).
        data_collator: turns a list of rows into the teacher's batch (default: `transformers.default_data_collator`);
            it sees only the input columns. Use the padding the student will train with.
        input_columns: the columns the teacher is given (default: all but labels and teacher-cache columns).
        output_dir: if given, the cache is saved there (`datasets.load_from_disk` reads it back). Required with
            several processes: each process computes a contiguous shard of the rows and saves it under
            `output_dir/shards/`, and the main process concatenates them.
        accelerator: the `Accelerator` (or `PartialState`) giving the device and the processes (default: the
            `PartialState` of the launch, on CPU when `ACCELERATE_USE_CPU` is set). The teacher is moved to its
            device.

    Returns:
        `dataset` with the columns `teacher_logits` (or `teacher_topk_values` and `teacher_topk_indices`) and
        `teacher_input_hash`, and in `info.description` the JSON record of the cache (see
        :mod:`hf_distill.teachers.cache_record`), which `DistillationTrainer` checks.
    """
    dtype = dtype or "float32"
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}.")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (full logits), got {top_k!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    check_no_random_transform(dataset)
    columns = list(input_columns) if input_columns is not None else default_input_columns(dataset)
    unknown = [name for name in columns if name not in dataset.column_names]
    if not columns or unknown:
        raise ValueError(f"input_columns {columns} must be columns of the dataset, which has {dataset.column_names}.")
    accelerator = accelerator or PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ValueError(
            f"{launched} processes were launched but accelerate runs {accelerator.num_processes}: each would cache "
            "every row. On a machine without GPUs, launch with ACCELERATE_USE_CPU=true (accelerate launch --cpu)."
        )
    if accelerator.num_processes > 1 and output_dir is None:
        raise ValueError("Caching with several processes writes each shard to disk: give output_dir.")

    shard = dataset.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    outputs, num_classes, per_position = _teacher_outputs(
        teacher, shard, columns, top_k, batch_size, dtype, data_collator, accelerator.device
    )
    outputs[TEACHER_INPUT_HASH_KEY] = pa.array(row_hashes(shard, columns))
    name, name_or_path = teacher_identity(teacher)
    record = CacheRecord(
        teacher_class=name,
        teacher_name_or_path=name_or_path,
        teacher_sha256=teacher_sha256(teacher),
        dataset_fingerprint=dataset._fingerprint,
        num_rows=len(dataset),
        input_columns=columns,
        preprocessing=describe_preprocessing(data_collator, dataset),
        top_k=top_k,
        dtype=dtype,
        num_classes=num_classes,
        per_position=per_position,
    )
    # The outputs' fingerprint from what made them: `datasets` would otherwise hash the whole table (pickling its
    # buffers), which for the full logits of a large vocabulary takes longer than the teacher's forward passes.
    fingerprint = Hasher.hash([shard._fingerprint, record.to_json()])
    outputs_dataset = datasets.Dataset(InMemoryTable(pa.table(outputs)), fingerprint=fingerprint)
    cached = datasets.concatenate_datasets([shard, outputs_dataset], axis=1)
    cached = _with_format_of(cached, dataset, list(outputs))
    if accelerator.num_processes > 1:
        cached = _merge_shards(cached, Path(output_dir), accelerator)
    cached.info.description = record.to_json()
    if output_dir is not None and accelerator.is_main_process:
        cached.save_to_disk(str(output_dir))
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # Every process reads the saved cache, so that the shards, which the merged dataset maps, can go.
        cached = datasets.load_from_disk(str(output_dir))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(Path(output_dir) / SHARDS_FOLDER)
    return cached


def _teacher_outputs(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    columns: list[str],
    top_k: int | None,
    batch_size: int,
    dtype: str,
    data_collator: Any,
    device: torch.device,
) -> tuple[dict[str, pa.Array], int, bool]:
    """The teacher's stored outputs for the rows of `dataset`, as Arrow arrays keyed by column; the number of classes
    and whether the outputs are per position."""
    loader = DataLoader(
        dataset.select_columns(columns),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=data_collator or default_data_collator,
    )
    was_training = teacher.training
    teacher.eval().to(device)
    names = teacher_columns(top_k)
    stored: dict[str, list[np.ndarray]] = {name: [] for name in names}
    num_classes, per_position = 0, False
    try:
        with torch.inference_mode():
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                logits = teacher_forward(teacher, batch)[0]  # (B, C) or (B, L, C)
                num_classes, per_position = logits.shape[-1], logits.dim() == 3
                if top_k is not None and top_k > num_classes:
                    raise ValueError(f"top_k={top_k} exceeds the teacher's {num_classes} classes.")
                if top_k is None:
                    parts = [to_storage(logits, dtype)]
                else:
                    values, indices = torch.log_softmax(logits.float(), dim=-1).topk(top_k, dim=-1)
                    parts = [to_storage(values, dtype), indices.to(torch.int32).cpu().numpy()]
                length = logits.shape[1] if per_position else None
                for i, positions in enumerate(example_positions(batch, logits.shape[0], length)):
                    for name, part in zip(names, parts, strict=True):
                        own = part[i] if positions is None else part[i][_numpy_index(as_run(positions))]
                        stored[name].append(own)
    finally:
        teacher.train(was_training)
    if not stored[names[0]]:
        raise ValueError("The dataset is empty: there is nothing to cache.")
    return {name: nested_array(rows) for name, rows in stored.items()}, num_classes, per_position


def _numpy_index(index: slice | torch.Tensor) -> slice | np.ndarray:
    return index if isinstance(index, slice) else index.cpu().numpy()


def _with_format_of(cached: datasets.Dataset, dataset: datasets.Dataset, added: list[str]) -> datasets.Dataset:
    """`cached` in the format of `dataset` (e.g. `"torch"`: its rows come as tensors, not Python lists, which a data
    loader would turn into tensors again at every step), the `added` columns included."""
    given, columns = dataset.format, dataset.format["columns"]
    columns = None if columns is None or set(columns) == set(dataset.column_names) else [*columns, *added]
    return cached.with_format(given["type"], columns, given["output_all_columns"], **given["format_kwargs"])


def _merge_shards(shard: datasets.Dataset, output_dir: Path, accelerator: PartialState) -> datasets.Dataset:
    """Each process saves its shard under `output_dir/shards/`; each then concatenates them in process order."""
    folder = output_dir / SHARDS_FOLDER
    shard.save_to_disk(str(folder / f"{accelerator.process_index:05d}"))
    accelerator.wait_for_everyone()
    return merge_cache_shards([folder / f"{index:05d}" for index in range(accelerator.num_processes)])


def merge_cache_shards(paths: list[str | os.PathLike]) -> datasets.Dataset:
    """The shards saved by each process, concatenated in the given (process) order."""
    return datasets.concatenate_datasets([datasets.load_from_disk(str(path)) for path in paths])


def cache_size(cache: datasets.Dataset) -> dict[str, float]:
    """Bytes of the cache's teacher columns (values, indices, their Arrow offsets; not the input hash) in all, per
    example and, for token-level caches, per cached position (token)."""
    record = read_cache_record(cache)
    if record is None:
        raise ValueError("The dataset is not a teacher cache (no record in info.description).")
    table = cache.with_format("arrow")[:]
    total = sum(table.column(name).nbytes for name in teacher_columns(record.top_k))
    size = {"bytes": float(total), "examples": float(len(cache)), "bytes_per_example": total / max(len(cache), 1)}
    if record.per_position:
        column = table.column(teacher_columns(record.top_k)[0])
        tokens = sum(len(chunk.flatten()) for chunk in column.chunks)
        size.update(tokens=float(tokens), bytes_per_token=total / max(tokens, 1))
    return size
