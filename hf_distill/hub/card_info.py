"""Facts for a distilled student's model card, gathered from a trainer or from an output folder's files."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard
from torch import nn

from ..modeling import count_parameters
from .card import (
    DistillationCardInfo,
    ModelResult,
    build_model_card,
    is_hub_model_id,
    is_hub_repo_id,
    validate_model_card,
)
from .files import CONFIG_NAME, HF_DISTILL_CONFIG_KEY, README_NAME, WEIGHTS_NAME
from .timm_format import _unwrap, is_timm_model

if TYPE_CHECKING:
    from transformers import Trainer

REPORT_NAME = "report.json"
TRAINER_STATE_NAME = "trainer_state.json"


def create_model_card(trainer: Trainer, output_dir: str, **kwargs: Any) -> ModelCard:
    """Write `output_dir/README.md` for the student of a `DistillationTrainer` and return the card.

    Called by the trainer's `create_model_card` (so by `Trainer.push_to_hub`) on the main process. Facts come from
    the trainer (distillation arguments, teacher and student, training budget, the latest `eval_accuracy`,
    `eval_teacher_accuracy` and `eval_teacher_agreement` of `state.log_history`) and, when present, from
    `output_dir/report.json`, whose results table (teacher / scratch student / distilled student) wins.

    Args:
        trainer: a `DistillationTrainer` (any `Trainer` works; missing distillation facts show as "—").
        output_dir: the folder the student was saved to.
        **kwargs: `Trainer.create_model_card`'s keywords: `model_name`, `finetuned_from` (the teacher's Hub id),
            `dataset` (Hub dataset ids), `tasks`, `tags`, `language`, `license`; others are ignored.
    """
    card = build_model_card(card_info_from_trainer(trainer, output_dir, **kwargs))
    validate_model_card(card)
    card.save(os.path.join(output_dir, README_NAME))
    return card


def card_info_from_trainer(trainer: Trainer, output_dir: str, **kwargs: Any) -> DistillationCardInfo:
    """`DistillationCardInfo` from a trainer after training, completed by `output_dir/report.json` if present."""
    args, student = trainer.args, _unwrap(trainer.model)
    teacher = getattr(trainer, "teacher_model", None)
    teacher = _unwrap(teacher) if teacher is not None else None
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
    info = _student_info(student, kwargs.get("model_name") or _name_from(repo_id, output_dir), repo_id)
    if teacher is not None:
        info.teacher_id, info.teacher_origin = _teacher_identity(teacher)
    info.teacher_id = kwargs.get("finetuned_from") or info.teacher_id
    info.alpha, info.temperature = getattr(args, "alpha", None), getattr(args, "temperature", None)
    method = getattr(args, "distillation_method", "kd")  # the teacher term: Hinton's soft targets, DKD or DIST
    info.loss = getattr(args, "distillation_loss", None) if method == "kd" else method
    if info.loss and getattr(args, "logit_standardization", False):
        info.loss += " + logit standardization"
    if getattr(args, "soft_weight", None) is not None:
        info.loss_weights = tuple(args.loss_weights)
    world = max(getattr(args, "world_size", 1), 1)
    info.training = {
        "epochs": args.num_train_epochs if args.max_steps <= 0 else None,
        "max_steps": args.max_steps if args.max_steps > 0 else None,
        "optimizer_steps": trainer.state.global_step,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
    }
    info.training = {k: v for k, v in info.training.items() if v is not None}
    metrics = _latest_eval_metrics(trainer.state.log_history)
    if teacher is not None:
        teacher_accuracy = metrics.get("eval_teacher_accuracy")
        info.results["teacher"] = ModelResult(info.teacher_id, count_parameters(teacher), teacher_accuracy)
    info.results["student_distilled"] = ModelResult(
        info.student_architecture,
        count_parameters(student),
        metrics.get("eval_accuracy"),
        agreement=metrics.get("eval_teacher_agreement"),
    )
    info.dataset = _dataset_name(getattr(trainer, "train_dataset", None))
    _apply_kwargs(info, kwargs)
    _apply_report(info, _read_json(Path(output_dir) / REPORT_NAME))
    return info


def card_from_output_dir(output_dir: str | os.PathLike, repo_id: str | None = None) -> ModelCard:
    """The card of a distilled output folder, from its `config.json`, `report.json` and `trainer_state.json`."""
    card = build_model_card(card_info_from_output_dir(output_dir, repo_id))
    validate_model_card(card)
    return card


def card_info_from_output_dir(output_dir: str | os.PathLike, repo_id: str | None = None) -> DistillationCardInfo:
    """`DistillationCardInfo` from files only (no trainer, no model instantiated).

    Raises:
        ValueError: the folder has no `config.json` and no weights to describe.
    """
    folder = Path(output_dir)
    config = _read_json(folder / CONFIG_NAME)
    if config is None and not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"{str(folder)!r} has neither {CONFIG_NAME} nor {WEIGHTS_NAME}: nothing to describe.")
    config = config or {}
    info = DistillationCardInfo(model_name=_name_from(repo_id, folder), library_name=None, repo_id=repo_id)
    if "architecture" in config and "pretrained_cfg" in config:  # timm's Hub format
        info.library_name, info.student_architecture = "timm", config["architecture"]
        info.task = "image-classification"
        info.custom_timm_build = bool(config.get(HF_DISTILL_CONFIG_KEY, {}).get("cifar_stem"))
    elif "model_type" in config or "architectures" in config:
        info.library_name = "transformers"
        info.student_architecture = (config.get("architectures") or [config.get("model_type")])[0]
        info.auto_class, info.task = _auto_class(info.student_architecture)
    state = _read_json(folder / TRAINER_STATE_NAME) or {}
    metrics = _latest_eval_metrics(state.get("log_history", []))
    info.results["student_distilled"] = ModelResult(
        info.student_architecture,
        _safetensors_parameters(folder / WEIGHTS_NAME),
        metrics.get("eval_accuracy"),
        agreement=metrics.get("eval_teacher_agreement"),
    )
    if state.get("global_step"):
        info.training["optimizer_steps"] = state["global_step"]
    _apply_report(info, _read_json(folder / REPORT_NAME))
    return info


def _dataset_name(dataset: Any) -> str | None:
    """`name (config)` recorded by `datasets.load_dataset` in a dataset's info; `None` for in-memory data."""
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None)
    config = getattr(info, "config_name", None)
    return f"{name} ({config})" if name and config and config != "default" else name


def _student_info(student: nn.Module, model_name: str, repo_id: str | None) -> DistillationCardInfo:
    info = DistillationCardInfo(model_name=model_name, library_name=None, repo_id=repo_id)
    if is_timm_model(student):
        info.library_name, info.task = "timm", "image-classification"
        info.student_architecture = student.pretrained_cfg["architecture"]
        info.custom_timm_build = bool(getattr(student, "hf_distill_config", {}).get("cifar_stem"))
    elif hasattr(student, "config") and hasattr(student, "save_pretrained"):
        info.library_name, info.student_architecture = "transformers", type(student).__name__
        info.auto_class, info.task = _auto_class(info.student_architecture)
    else:
        info.student_architecture = type(student).__name__
    return info


def _auto_class(architecture: str) -> tuple[str, str | None]:
    """The `Auto...` class that loads `architecture`, and its task."""
    for suffix, auto_class, task in (
        ("ForSequenceClassification", "AutoModelForSequenceClassification", "text-classification"),
        ("ForImageClassification", "AutoModelForImageClassification", "image-classification"),
        ("ForTokenClassification", "AutoModelForTokenClassification", "token-classification"),
        ("ForCausalLM", "AutoModelForCausalLM", "text-generation"),
        ("LMHeadModel", "AutoModelForCausalLM", "text-generation"),
    ):
        if architecture.endswith(suffix):
            return auto_class, task
    return "AutoModel", None


def _teacher_identity(teacher: nn.Module) -> tuple[str, str | None]:
    """The teacher's id, and how several teachers are combined (a `TeacherEnsemble`, known by its `teachers`
    ModuleDict; one teacher alone is named as itself): `("resnet50 + vit_small", "an ensemble of 2 teachers ...")`."""
    members = getattr(teacher, "teachers", None)
    if not isinstance(members, nn.ModuleDict):
        return _model_id(teacher), None
    ids = [_model_id(_unwrap(member)) for member in members.values()]
    if len(ids) == 1:
        return ids[0], None
    route = getattr(teacher, "route_column", None)
    if route is not None:
        return " + ".join(ids), f"an ensemble of {len(ids)} teachers, each example routed to one by `{route}`"
    weights = list(getattr(teacher, "weights", None) or [1.0] * len(ids))
    shares = ", ".join(f"{weight / sum(weights):.2g}" for weight in weights)
    return " + ".join(ids), f"an ensemble of {len(ids)} teachers, their tempered probabilities mixed {shares}"


def _model_id(model: nn.Module) -> str:
    """Hub id or plain name of a teacher: transformers' `name_or_path` unless it is a local folder, the Hub id a
    timm model was loaded from (`hf-hub:owner/name`), else timm's architecture or the model's class.

    timm's `pretrained_cfg["hf_hub_id"]` is left out: timm sets it whether or not the Hub weights were loaded.
    """
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if name:
        local = os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)
        return f"{type(model).__name__} (local checkpoint)" if local else name
    built = getattr(model, "hf_distill_config", None)  # set by `hf_distill.recipes.timm_models`
    if isinstance(built, dict) and built.get("model_name"):
        return built["model_name"].removeprefix("hf-hub:")
    pretrained_cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(pretrained_cfg, dict) and pretrained_cfg.get("architecture"):
        return pretrained_cfg["architecture"]
    return type(model).__name__


def _apply_kwargs(info: DistillationCardInfo, kwargs: dict[str, Any]) -> None:
    """`Trainer.create_model_card`'s keywords: datasets, tasks, tags, language, license."""
    as_list = lambda value: [value] if isinstance(value, str) else list(value or [])  # noqa: E731
    info.datasets = as_list(kwargs.get("dataset")) or info.datasets
    if info.datasets and not info.dataset:
        info.dataset = info.datasets[0]
    info.task = (as_list(kwargs.get("tasks")) or [info.task])[0]
    info.tags = list(dict.fromkeys([*info.tags, *as_list(kwargs.get("tags"))]))
    info.language = as_list(kwargs.get("language")) or info.language
    info.license = kwargs.get("license") or info.license


def _apply_report(info: DistillationCardInfo, report: dict[str, Any] | None) -> None:
    """Fill `info` from a `report.json` (schema: task, dataset, distillation, device, models); report values win."""
    if not report:
        return
    info.task = report.get("task") or info.task
    info.dataset = report.get("dataset") or info.dataset
    dataset_id = report.get("dataset_id") or (report.get("dataset") if is_hub_repo_id(report.get("dataset")) else None)
    if dataset_id and dataset_id not in info.datasets:
        info.datasets = [dataset_id, *info.datasets]
    info.device = report.get("device") or info.device
    distillation = dict(report.get("distillation") or {})
    info.alpha = distillation.pop("alpha", info.alpha)
    info.temperature = distillation.pop("temperature", info.temperature)
    info.loss = distillation.pop("loss", info.loss)
    info.training.update(distillation)
    for key, entry in (report.get("models") or {}).items():
        if isinstance(entry, dict):
            info.results[key] = ModelResult.from_report(entry)
    described = report.get("teacher")
    if isinstance(described, dict) and (described.get("hub_id") or described.get("name")):
        # written by the recipe that loaded or trained the teacher: it knows whether it is a Hub model as it is
        info.teacher_id = described.get("hub_id") or described["name"]
        info.teacher_origin = None if described.get("hub_id") else described.get("origin")
        return
    teacher = info.results.get("teacher")
    if teacher is not None and teacher.model_name and (info.teacher_id is None or is_hub_model_id(teacher.model_name)):
        info.teacher_id = teacher.model_name


def _latest_eval_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The most recent log entry with `eval_accuracy` (empty if none)."""
    return next((entry for entry in reversed(log_history) if "eval_accuracy" in entry), {})


def _name_from(repo_id: str | None, output_dir: str | os.PathLike) -> str:
    return repo_id.split("/")[-1] if repo_id else Path(output_dir).resolve().name


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _safetensors_parameters(path: Path) -> int | None:
    """Number of values in a safetensors file, read from its header, BatchNorm statistics left out."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(
        math.prod(entry["shape"])
        for key, entry in header.items()
        if key != "__metadata__" and not key.endswith(buffers)
    )
