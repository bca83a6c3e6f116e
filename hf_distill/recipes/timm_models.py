"""One front door for timm image classifiers: create by name, CIFAR-sized stems, save and load checkpoints."""

from __future__ import annotations

import difflib
import json
import os
from typing import Any

import timm
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from safetensors.torch import load_file
from timm.models import model_entrypoint, save_for_hf, split_model_name_tag
from torch import nn

# Families whose constructors take `img_size` / `patch_size` (a `PatchEmbed` stem).
PATCH_EMBED_MODULES = (
    "timm.models.vision_transformer",
    "timm.models.deit",
    "timm.models.vision_transformer_relpos",
    "timm.models.beit",
    "timm.models.eva",
)
CONFIG_KEY = "hf_distill"


def check_model_name(name: str) -> str:
    """Return the architecture part of a timm name (`resnet50.a1_in1k` → `resnet50`) or raise for unknown names.

    Raises:
        ValueError: the name is not in `timm.list_models()`; the message lists the closest names.
    """
    arch, _ = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(f"Unknown timm model {name!r}.{hint} See `timm.list_models()` for all names.")
    return arch


def model_family(name: str) -> str:
    """`"patch_embed"` (ViT/DeiT-like), `"resnet"` or `"other"` for a valid timm model name."""
    module = model_entrypoint(check_model_name(name)).__module__
    if module in PATCH_EMBED_MODULES:
        return "patch_embed"
    return "resnet" if module == "timm.models.resnet" else "other"


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """Give a timm ResNet a stride-1 stem for 32×32 inputs (in place), as in the CIFAR ResNets.

    The first convolution becomes 3×3 stride 1 (a deep stem keeps its layers, its first stride becomes 1) and
    the stem max-pool is removed, so a 32×32 image reaches `layer1` at 32×32 instead of 8×8. The replaced
    first convolution is freshly initialised.
    """
    conv1 = model.conv1
    if isinstance(conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    else:  # deep stem: Sequential(conv s2, bn, act, conv, ...)
        first = next(m for m in conv1.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)
    model.maxpool = nn.Identity()
    return model


def create_image_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    image_size: int | None = None,
    cifar_stem: bool = False,
    patch_size: int = 4,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm classifier with `num_classes` outputs.

    Args:
        name: any `timm.list_models()` name, optionally with a pretrained tag (`resnet50.a1_in1k`).
        num_classes: size of the classifier head (logits of shape (B, num_classes)).
        pretrained: load timm's pretrained weights (downloads from the Hub); the head is re-initialised.
        image_size: input side for ViT/DeiT-like models (their position embeddings depend on it).
        cifar_stem: small-image stem for 32×32 inputs: stride-1 3×3 stem without max-pool for ResNets,
            `patch_size`×`patch_size` patches for ViT/DeiT-like models.
        patch_size: patch side used by `cifar_stem` for ViT/DeiT-like models.
        kwargs: passed to `timm.create_model` (e.g. `depth=2`, `drop_rate=0.1`).

    Raises:
        ValueError: unknown name, or `cifar_stem` for a family without a small-image stem here.
    """
    family = model_family(name)
    user_kwargs = dict(kwargs)
    if family == "patch_embed":
        if image_size is not None:
            kwargs.setdefault("img_size", image_size)
        if cifar_stem:
            kwargs.setdefault("patch_size", patch_size)
    elif cifar_stem and family != "resnet":
        raise ValueError(
            f"cifar_stem is defined for timm ResNets and ViT/DeiT-like models, not {name!r}; "
            "turn it off (and resize the images) for this model."
        )
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    if cifar_stem and family == "resnet":
        apply_cifar_stem(model)
    model.hf_distill_config = {
        "model_name": name,
        "cifar_stem": cifar_stem,
        "image_size": image_size,
        "model_kwargs": user_kwargs,
    }
    if family == "patch_embed":
        model.hf_distill_config["patch_size"] = kwargs.get("patch_size")
    return model


def save_image_model(model: nn.Module, output_dir: str, class_names: list[str] | None = None) -> None:
    """Save weights (`model.safetensors`) and a timm `config.json` that `load_image_model` rebuilds from."""
    extra = dict(getattr(model, "hf_distill_config", {}))
    model_config: dict[str, Any] = {CONFIG_KEY: extra}
    if class_names:
        model_config["label_names"] = list(class_names)
    save_for_hf(model, output_dir, model_config=model_config, safe_serialization=True)


def _load_state_dict(directory: str) -> dict[str, torch.Tensor]:
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(directory, filename)
        if os.path.exists(path):
            return load_file(path) if filename.endswith(".safetensors") else torch.load(path, weights_only=True)
    raise ValueError(f"No model.safetensors or pytorch_model.bin in {directory!r}.")


def load_image_model(
    name_or_path: str,
    num_classes: int | None = None,
    model_name: str | None = None,
    cifar_stem: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """Load a trained classifier from a folder or a Hub id.

    A folder written by `save_image_model` (or timm's `save_for_hf`) is rebuilt from its `config.json`.
    A folder with weights only (a trainer checkpoint) needs `model_name`, `cifar_stem` and `image_size` as it
    was built. Anything that is not an existing folder is read as a Hub id (`hf-hub:` optional).

    Raises:
        ValueError: missing folder, missing weights, or `num_classes` different from the checkpoint's.
    """
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if os.path.exists(config_file):
            with open(config_file) as f:
                config = json.load(f)
            extra = config.get(CONFIG_KEY, {})
            args = {k: v for k, v in config.get("model_args", {}).items() if k != "num_classes"}
            if "img_size" in args and isinstance(args["img_size"], list):
                args["img_size"] = tuple(args["img_size"])
            model = create_image_model(
                config["architecture"], config["num_classes"], cifar_stem=extra.get("cifar_stem", False), **args
            )
            model.hf_distill_config = dict(extra, model_name=extra.get("model_name", config["architecture"]))
        elif model_name is None or num_classes is None:
            raise ValueError(f"{name_or_path!r} has no config.json; also give the model name and number of classes.")
        else:
            model = create_image_model(model_name, num_classes, cifar_stem=cifar_stem, image_size=image_size)
        model.load_state_dict(_load_state_dict(path))
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ValueError(f"Model folder {name_or_path!r} does not exist.")
    else:
        repo_id = name_or_path.removeprefix("hf-hub:")
        with open(hf_hub_download(repo_id, "config.json")) as f:
            if CONFIG_KEY in json.load(f):  # saved by `save_image_model`: may carry a CIFAR stem timm cannot rebuild
                return load_image_model(snapshot_download(repo_id), num_classes)
        model = timm.create_model(f"hf-hub:{repo_id}", pretrained=True)
        model.hf_distill_config = {"model_name": f"hf-hub:{repo_id}", "cifar_stem": False, "image_size": image_size}
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(
            f"Model {name_or_path!r} predicts {model.num_classes} classes but the dataset has {num_classes}."
        )
    return model


def model_display_name(model: nn.Module) -> str:
    """A short description for reports: `resnet18 (CIFAR stem)`, `test_vit (depth=2, 4×4 patches)`, `resnet50`."""
    config = getattr(model, "hf_distill_config", {})
    details = [f"{key}={value}" for key, value in config.get("model_kwargs", {}).items()]
    if config.get("cifar_stem"):
        patch = config.get("patch_size")
        details.append(f"{patch}×{patch} patches" if patch else "CIFAR stem")
    name = config.get("model_name", type(model).__name__)
    return f"{name} ({', '.join(details)})" if details else name
