"""Which `checkpoint-<step>` folders of a run are complete enough to resume training from, and the trainer's resume
from the newest of them."""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from typing import Any

from safetensors import SafetensorError, safe_open
from transformers.trainer import OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# In the order `Trainer._load_from_checkpoint` prefers them: the first one present is the one that gets loaded.
# `model.safetensors` is also what `save_timm_model` writes for timm students.
SINGLE_WEIGHTS_NAMES = (SAFE_WEIGHTS_NAME, WEIGHTS_NAME, ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME)
WEIGHTS_INDEX_NAMES = (SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME)


def _is_whole(path: str) -> bool:
    """The file's own framing is intact: a safetensors header that covers the whole file, or a `torch.save` zip
    archive with its central directory (written last, so a truncated archive lacks it). Tensor values are not read.
    """
    if not os.path.isfile(path):
        return False
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt"):
                return True
        except (SafetensorError, OSError):
            return False
    return zipfile.is_zipfile(path)


def _read_json(path: str) -> str | None:
    """None if `path` holds valid JSON, else what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as file:
            json.load(file)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "not valid JSON"
    return None


def _missing_weights(folder: str) -> list[str]:
    for name in SINGLE_WEIGHTS_NAMES:
        if os.path.isfile(os.path.join(folder, name)):
            return [] if _is_whole(os.path.join(folder, name)) else [f"{name} (truncated or corrupt)"]
    for index_name in WEIGHTS_INDEX_NAMES:
        index_path = os.path.join(folder, index_name)
        if not os.path.isfile(index_path):
            continue
        try:
            with open(index_path, encoding="utf-8") as file:
                shards = sorted(set(json.load(file)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [f"{index_name} (not a valid shard index)"]
        return [
            f"{shard} ({'truncated or corrupt' if os.path.isfile(os.path.join(folder, shard)) else 'missing'})"
            for shard in shards
            if not _is_whole(os.path.join(folder, shard))
        ]
    return [f"model weights (none of {', '.join(SINGLE_WEIGHTS_NAMES + WEIGHTS_INDEX_NAMES)})"]


def missing_checkpoint_files(folder: str | os.PathLike, with_optimizer: bool = True) -> list[str]:
    """What a checkpoint folder lacks to resume training from it, as `"<file> (<problem>)"`; empty when complete.

    A folder is complete when:
      - `trainer_state.json` is valid JSON (the Trainer writes it last);
      - the model weights are whole: the first present of `model.safetensors` (also timm students'),
        `pytorch_model.bin` and the adapter files, else every shard named by `model.safetensors.index.json` or
        `pytorch_model.bin.index.json`;
      - `config.json`, if present, is valid JSON (resuming reads it);
      - unless `with_optimizer=False` (runs with `save_only_model=True`, whose checkpoints hold no optimizer state),
        `optimizer.pt` (or `optimizer.bin`) and `scheduler.pt` are whole.

    "Whole" checks a file's framing (see `_is_whole`), not its values.
    """
    folder = os.fspath(folder)
    missing = []
    state_problem = _read_json(os.path.join(folder, TRAINER_STATE_NAME))
    if state_problem:
        missing.append(f"{TRAINER_STATE_NAME} ({state_problem})")
    missing.extend(_missing_weights(folder))
    config_problem = _read_json(os.path.join(folder, CONFIG_NAME))
    if config_problem and config_problem != "missing":
        missing.append(f"{CONFIG_NAME} ({config_problem})")
    optimizer = next(
        (name for name in (OPTIMIZER_NAME, OPTIMIZER_NAME_BIN) if os.path.isfile(os.path.join(folder, name))),
        OPTIMIZER_NAME,
    )
    for name in (optimizer, SCHEDULER_NAME) if with_optimizer else ():
        path = os.path.join(folder, name)
        if not _is_whole(path):
            missing.append(f"{name} ({'truncated or corrupt' if os.path.isfile(path) else 'missing'})")
    return missing


def last_complete_checkpoint(output_dir: str | os.PathLike, with_optimizer: bool = True) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` that `missing_checkpoint_files` finds complete.

    Newer folders that are incomplete (a run stopped while saving, a full disk) are skipped with a warning naming
    each and what it lacks. Returns None when `output_dir` holds no complete checkpoint.
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    steps = {}
    for name in os.listdir(output_dir):
        match = CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps[name] = int(match.group(1))
    for name in sorted(steps, key=steps.get, reverse=True):
        folder = os.path.join(output_dir, name)
        missing = missing_checkpoint_files(folder, with_optimizer)
        if not missing:
            return folder
        logger.warning(f"Skipping incomplete checkpoint {folder}: {'; '.join(missing)}.")
    return None


class CompleteCheckpointResumeMixin:
    """Mixed into [`DistillationTrainer`]: `resume_from_checkpoint=True` resumes from the newest complete one."""

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`, where `resume_from_checkpoint=True` resumes from the newest *complete* checkpoint.

        A checkpoint folder left half-written (a run stopped while saving, a full disk) is skipped with a warning
        naming it and what it lacks (see `missing_checkpoint_files`), where the Trainer would pick it and fail.
        DeepSpeed and FSDP checkpoints have their own layouts and are left to the Trainer.

        Raises:
            ValueError: `resume_from_checkpoint=True` and `output_dir` holds no complete checkpoint, as the Trainer
                raises when it holds none at all.
        """
        if resume_from_checkpoint is True and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, not self.args.save_only_model)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        return super().train(resume_from_checkpoint, *args, **kwargs)
