"""Hub export: timm students in timm's own Hub format, and pushing a distilled output folder (student only)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard
    from torch import Tensor, nn

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


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message names the repository, the endpoint and what to do about it."""


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


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled student",
    token: str | None = None,
    endpoint: str | None = None,
    model_card: ModelCard | None = None,
    refresh_card: bool = False,
    include_training_args: bool = False,
    include_checkpoints: bool = False,
) -> CommitInfo:
    """Push the student of a distilled output folder to a Hub model repository, in one commit.

    Creates the repository if needed (`create_repo(exist_ok=True)`) and the branch `revision` if it is new, then
    commits the files chosen by `select_upload_files` plus a model card: `model_card` if given, else the folder's
    `README.md`, else (or with `refresh_card`) a card built from its `report.json` and `config.json` by
    `hf_distill.card_info.card_from_output_dir`. The folder itself is only read, never written, so a failed push
    leaves it exactly as it was.

    Args:
        output_dir: a folder written by `DistillationTrainer.save_model` (and a report), holding the student.
        repo_id: `namespace/name` of the model repository.
        private: make a new repository private (no effect on an existing one).
        revision: branch to commit to (created from `main` if missing); default `main`.
        commit_message: summary of the commit.
        token: Hub token with write access; default: the logged-in token (`hf auth login`, `HF_TOKEN`).
        endpoint: Hub URL; default `HF_ENDPOINT` or https://huggingface.co.
        model_card: card to push as `README.md`, replacing any in the folder.
        refresh_card: rebuild the card from the folder even if it has a `README.md`.
        include_training_args, include_checkpoints: see `select_upload_files`.

    Returns:
        The `CommitInfo` of the commit (`.oid`, `.commit_url`).

    Raises:
        ValueError: the folder is missing or holds no model weights.
        HubPushError: the Hub refused the push (401/403 authentication, 404 repository) or could not be reached.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(output_dir)
    if not folder.is_dir():
        raise ValueError(f"Output folder {str(folder)!r} does not exist.")
    files = select_upload_files(folder, include_training_args, include_checkpoints)
    if not any(name in files for name in MODEL_FILES):
        raise ValueError(f"{str(folder)!r} holds none of {list(MODEL_FILES)}: is it a distilled output folder?")
    if model_card is None and (refresh_card or README_NAME not in files):
        from .card_info import card_from_output_dir

        model_card = card_from_output_dir(folder, repo_id=repo_id)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    if model_card is not None:
        operations = [op for op in operations if op.path_in_repo != README_NAME]
        operations.append(CommitOperationAdd(path_in_repo=README_NAME, path_or_fileobj=str(model_card).encode()))

    api = HfApi(endpoint=endpoint, token=token, library_name="hf_distill")
    with hub_errors(repo_id, api.endpoint, folder):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)


@contextlib.contextmanager
def hub_errors(repo_id: str, endpoint: str, output_dir: str | os.PathLike) -> Iterator[None]:
    """Turn an HTTP error of the Hub or a network failure raised inside the block into a `HubPushError`.

    The error is found on the exception or its `__cause__` chain (huggingface_hub wraps some, e.g. failed LFS
    uploads, in a `RuntimeError`). A `ValueError` (such as the Hub rejecting the card's metadata) and any other
    exception propagate unchanged, and so does a `HubPushError` from a nested block (`Trainer.push_to_hub` calls
    `init_hf_repo`). Wrap `Trainer.push_to_hub` with it to get the same messages as `push_output_dir`.
    """
    try:
        yield
    except Exception as error:
        cause = None if isinstance(error, (ValueError, HubPushError)) else _hub_cause(error)
        if cause is None:
            raise
        raise HubPushError(describe_hub_error(cause, repo_id, endpoint, output_dir)) from error


def _hub_cause(error: BaseException) -> BaseException | None:
    """The HTTP status error or network error that is `error` or its explicit cause (`raise ... from`), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _status_code(error) is not None or _is_transport_error(error):
            return error
        error = error.__cause__
    return None


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_transport_error(error: BaseException) -> bool:
    """A network-level failure of the HTTP client (httpx or httpx2, whichever `huggingface_hub` uses)."""
    if type(error).__name__ == "OfflineModeIsEnabled":
        return True
    return any(cls.__name__ == "TransportError" and cls.__module__.startswith("httpx") for cls in type(error).__mro__)


def describe_hub_error(error: BaseException, repo_id: str, endpoint: str, output_dir: str | os.PathLike) -> str:
    """One message for a failed push: what happened, to which repo on which endpoint, and what to do."""
    where = f"{repo_id!r} on {endpoint}"
    status = _status_code(error)
    server_message = getattr(error, "server_message", None)
    said = f" The Hub said: {server_message.strip()}" if server_message and server_message.strip() else ""
    if status == 401:
        what = (
            f"Authentication failed (HTTP 401) pushing to {where}: the token is missing or invalid. "
            "Log in with `hf auth login`, set HF_TOKEN, or pass a token with write access."
        )
    elif status == 403:
        what = f"Permission denied (HTTP 403) pushing to {where}: the token cannot write to this namespace."
    elif status == 404:
        what = (
            f"Repository {where} was not found (HTTP 404): check the namespace and name, and that the token "
            "can access it."
        )
    elif status is not None:
        what = f"The Hub answered HTTP {status} while pushing to {where}."
    elif type(error).__name__ == "OfflineModeIsEnabled":
        what = f"Cannot push to {where}: offline mode is on (HF_HUB_OFFLINE is set)."
    elif any(cls.__name__ in ("ConnectError", "ConnectTimeout") for cls in type(error).__mro__):
        what = f"Could not connect to {endpoint} to push {repo_id!r} ({error}). Check the network and HF_ENDPOINT."
    else:
        what = (
            f"The connection to {endpoint} was lost while pushing to {repo_id!r} ({type(error).__name__}: {error}). "
            "Nothing is committed until the Hub answers a commit; run the push again."
        )
    return f"{what}{said} The local folder {str(output_dir)!r} was not modified."
