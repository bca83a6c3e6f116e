"""The files of a distilled output folder: their names, and which of them are pushed to the Hub."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
README_NAME = "README.md"
TRAINING_ARGS_NAME = "training_args.bin"
# Extra key of a timm `config.json` holding how hf_distill built the model (see `timm_models.save_image_model`).
HF_DISTILL_CONFIG_KEY = "hf_distill"
# Files that restore a training run rather than describe the model: never pushed.
TRAINING_STATE_PATTERNS = ("optimizer*.pt", "optimizer*.bin", "scheduler*.pt", "scaler*.pt", "rng_state*.pth")
CHECKPOINT_DIR_PATTERNS = ("checkpoint-*", "last-checkpoint", "global_step*")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf")
MODEL_FILES = (WEIGHTS_NAME, "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def select_upload_files(
    output_dir: str | os.PathLike, include_training_args: bool = False, include_checkpoints: bool = False
) -> list[str]:
    """Relative paths (POSIX, sorted) of the files of a distilled output folder that are pushed to the Hub.

    Left out: hidden and `_`-prefixed paths (as `Trainer.push_to_hub`), anything of the teacher (a folder whose name
    contains "teacher", or a weight file whose name does), optimizer / scheduler / scaler / RNG states, checkpoint
    folders (`checkpoint-*`, `last-checkpoint`, DeepSpeed `global_step*`) unless `include_checkpoints`, and
    `training_args.bin` unless `include_training_args`. Reports, plots and TensorBoard logs are kept.
    """
    root = Path(output_dir)
    selected = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        folders, name = parts[:-1], parts[-1]
        if any(part.startswith((".", "_")) for part in parts):
            continue
        if any("teacher" in folder.lower() for folder in folders):
            continue
        if "teacher" in name.lower() and name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        in_checkpoint = any(
            fnmatch.fnmatch(folder, pattern) for folder in folders for pattern in CHECKPOINT_DIR_PATTERNS
        )
        if in_checkpoint and not include_checkpoints:
            continue
        if not in_checkpoint and any(fnmatch.fnmatch(name, pattern) for pattern in TRAINING_STATE_PATTERNS):
            continue
        if name == TRAINING_ARGS_NAME and not (include_training_args or in_checkpoint):
            continue
        selected.append("/".join(parts))
    return selected
