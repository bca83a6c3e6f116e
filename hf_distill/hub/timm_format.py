"""timm students in timm's own Hub format (`config.json` + `model.safetensors`), as `timm.models.save_for_hf`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .files import CONFIG_NAME, HF_DISTILL_CONFIG_KEY, WEIGHTS_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / DeepSpeed (`.module`) and `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None or inner is model:
            return model
        model = inner


def is_timm_model(model: nn.Module) -> bool:
    """True for a model built by `timm.create_model` (a timm class carrying a `pretrained_cfg` with its architecture).

    Such a model is saved with `save_timm_model`; anything else (transformers models, plain modules, timm classes
    instantiated by hand, which timm cannot rebuild by name) is not.
    """
    model = _unwrap(model)
    pretrained_cfg = getattr(model, "pretrained_cfg", None)
    return (
        type(model).__module__.startswith("timm.")
        and isinstance(pretrained_cfg, dict)
        and bool(pretrained_cfg.get("architecture"))
    )


def save_timm_model(
    model: nn.Module,
    output_dir: str,
    state_dict: dict[str, Tensor] | None = None,
    label_names: list[str] | None = None,
) -> None:
    """Save a timm model in timm's own Hub format: `config.json` + `model.safetensors`, as `timm.models.save_for_hf`.

    `config.json` holds `architecture`, `num_classes`, `num_features`, `model_args` and the `pretrained_cfg`
    (input size, mean/std, interpolation, ...), so that after a push
    `timm.create_model("hf-hub:<repo>", pretrained=True)` (or `timm.create_model("local-dir:<output_dir>",
    pretrained=True)` on the folder) rebuilds the model with the right `num_classes` and loads the weights.
    `model.safetensors` is the module's own `state_dict()` (same keys), which is also what
    `Trainer._load_from_checkpoint` loads when resuming. How hf_distill built the model
    (`model.hf_distill_config`, e.g. a CIFAR stem) is kept under the `hf_distill` key of `config.json`.

    Args:
        model: a model from `timm.create_model` (see `is_timm_model`), possibly wrapped by DDP / `torch.compile`.
        output_dir: folder to write into (created if missing).
        state_dict: weights to save instead of `model.state_dict()` (e.g. gathered from several processes).
        label_names: class names, index i naming logit i; stored as timm's `label_names`.

    Raises:
        ValueError: `model` is not a timm model, or `label_names` does not match `model.num_classes`.
    """
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    model = _unwrap(model)
    if not is_timm_model(model):
        raise ValueError(
            f"{type(model).__name__} is not a model built by timm.create_model (no pretrained_cfg with an "
            "architecture), so timm could not rebuild it from a config.json; save its state_dict instead."
        )
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f"{len(label_names)} label_names given for a model with {model.num_classes} classes.")
    os.makedirs(output_dir, exist_ok=True)
    tensors = _contiguous_unshared(state_dict if state_dict is not None else model.state_dict())
    save_file(tensors, os.path.join(output_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    model_config: dict[str, Any] = {}
    if label_names is not None:
        model_config["label_names"] = list(label_names)
    if getattr(model, "hf_distill_config", None):
        model_config[HF_DISTILL_CONFIG_KEY] = dict(model.hf_distill_config)
    save_config_for_hf(model, os.path.join(output_dir, CONFIG_NAME), model_config=model_config)


def _contiguous_unshared(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors; a tensor sharing storage with an earlier one (tied weights) is copied.

    safetensors refuses shared storage; `load_state_dict` fills tied parameters from either copy.
    """
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(storage)
        tensors[key] = tensor
    return tensors
