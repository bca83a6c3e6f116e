"""Model cards for distilled students: what they were distilled from, how, and how they compare."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from .hub import CONFIG_NAME, HF_DISTILL_CONFIG_KEY, README_NAME, WEIGHTS_NAME, _unwrap, is_timm_model

if TYPE_CHECKING:
    from torch import nn
    from transformers import Trainer

REPORT_NAME = "report.json"
TRAINER_STATE_NAME = "trainer_state.json"
REQUIRED_TAGS = ("knowledge-distillation", "hf_distill")
PIPELINE_TASKS = ("image-classification", "text-classification", "token-classification", "text-generation")
RESULT_ROWS = (
    ("teacher", "Teacher"),
    ("student_scratch", "Student trained from scratch"),
    ("student_distilled", "Distilled student (this model)"),
)
LOSS_FORMULAS = {
    "forward_kl": "alpha · T² · KL(p_teacher^T ‖ p_student^T) + (1 − alpha) · CE(student, labels)",
    "reverse_kl": "alpha · T² · KL(p_student^T ‖ p_teacher^T) + (1 − alpha) · CE(student, labels)",
    "jsd": "alpha · T² · JSD_beta(p_teacher^T, p_student^T) + (1 − alpha) · CE(student, labels)",
    "mse": "alpha · MSE(z_student / T, z_teacher / T) + (1 − alpha) · CE(student, labels)",
}


@dataclass
class ModelResult:
    """One row of the results table; `None` where unknown. Accuracies and agreement are fractions in [0, 1]."""

    model_name: str | None = None
    parameters: int | None = None
    accuracy: float | None = None
    accuracy_std: float | None = None
    agreement: float | None = None
    latency_ms: float | None = None

    @classmethod
    def from_report(cls, entry: dict[str, Any]) -> ModelResult:
        """From one `report.json["models"][...]` entry (extra keys ignored)."""
        return cls(**{key: entry.get(key) for key in cls.__dataclass_fields__})


@dataclass
class DistillationCardInfo:
    """Everything a distilled student's model card says; build it from a trainer or an output folder.

    `library_name` is `"timm"`, `"transformers"` or `None` (a plain PyTorch module). `teacher_id` is shown as
    "distilled from" and becomes `base_model` when it is a Hub model id. `training` holds the budget (epochs,
    steps, batch size, learning rate, seeds, ...) in display order. `datasets` are Hub dataset ids, `dataset` the
    name shown in the card.
    """

    model_name: str
    library_name: str | None
    task: str | None = None
    repo_id: str | None = None
    student_architecture: str | None = None
    auto_class: str | None = None
    custom_timm_build: bool = False
    teacher_id: str | None = None
    dataset: str | None = None
    datasets: list[str] = field(default_factory=list)
    alpha: float | None = None
    temperature: float | None = None
    loss: str | None = None
    loss_weights: tuple[float, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, ModelResult] = field(default_factory=dict)
    device: str | None = None
    license: str | None = None
    language: list[str] | None = None
    tags: list[str] = field(default_factory=list)


def is_hub_model_id(name: str | None) -> bool:
    """True for a string that is a valid Hub repo id and not a local path (`timm/resnet18.a1_in1k`, `gpt2`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def build_model_card(info: DistillationCardInfo) -> ModelCard:
    """The model card (YAML metadata + Markdown) of a distilled student; pure, no file or network access."""
    distilled = info.results.get("student_distilled", ModelResult())
    eval_results = None
    dataset_name = info.dataset or (info.datasets[0] if info.datasets else None)
    if distilled.accuracy is not None and info.task is not None and dataset_name is not None:
        # model-index entries need a task and a dataset; without them the result is only in the Markdown table.
        eval_results = [
            EvalResult(
                task_type=info.task,
                dataset_type=info.datasets[0] if info.datasets else _slug(dataset_name),
                dataset_name=dataset_name,
                metric_type="accuracy",
                metric_value=round(float(distilled.accuracy), 4),
                metric_name="Accuracy",
            )
        ]
    tags = list(dict.fromkeys([*info.tags, *REQUIRED_TAGS, *([info.task] if info.task else [])]))
    data = ModelCardData(
        library_name=info.library_name,
        base_model=info.teacher_id if is_hub_model_id(info.teacher_id) else None,
        datasets=info.datasets or None,
        license=info.license,
        language=info.language,
        metrics=["accuracy"] if any(r.accuracy is not None for r in info.results.values()) else None,
        pipeline_tag=info.task if info.task in PIPELINE_TASKS else None,
        tags=tags,
        model_name=info.model_name if eval_results else None,
        eval_results=eval_results,
    )
    body = "\n".join([_intro(info), _setup_section(info), _results_section(info), _usage_section(info)])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def validate_model_card(card: ModelCard) -> None:
    """Offline checks of a card's metadata, as far as `huggingface_hub` can make them without the Hub.

    Re-parses the card strictly (`ModelCard(text)` raises on a YAML block that is not a mapping or a `model-index`
    that cannot be read), round-trips `model-index` through `model_index_to_eval_results`, and checks the keys
    this project relies on. `ModelCard.validate()` runs the Hub's own validation but needs the network.

    Raises:
        ValueError: listing every problem found.
    """
    data = ModelCard(str(card)).data.to_dict()
    problems = []
    if data.get("library_name") not in ("timm", "transformers", None):
        problems.append(f"library_name is {data.get('library_name')!r}, expected 'timm' or 'transformers'")
    missing = [tag for tag in REQUIRED_TAGS if tag not in (data.get("tags") or [])]
    if missing:
        problems.append(f"tags miss {missing}")
    if data.get("base_model") is not None and not is_hub_model_id(data["base_model"]):
        problems.append(f"base_model {data['base_model']!r} is not a Hub model id")
    if "model-index" in data:
        model_name, results = model_index_to_eval_results(data["model-index"])
        if not model_name or not results:
            problems.append("model-index has no model name or no results")
    if problems:
        raise ValueError("Invalid model card metadata: " + "; ".join(problems) + ".")


# ---- Markdown sections ----------------------------------------------------------------------------------------------


def _intro(info: DistillationCardInfo) -> str:
    teacher = _teacher_link(info.teacher_id) if info.teacher_id else "a teacher model"
    student = f"`{info.student_architecture}`" if info.student_architecture else "a student"
    dataset = f" on {info.dataset}" if info.dataset else ""
    library = {"timm": "timm", "transformers": "🤗 transformers"}.get(info.library_name or "", "PyTorch")
    return (
        f"# {info.model_name}\n\nThis model is {student} ({library}) distilled from {teacher}{dataset} by knowledge "
        "distillation with `hf_distill`: the student learns from the teacher's softened predictions as well as "
        "from the labels. The teacher is not part of this repository.\n"
    )


def _setup_section(info: DistillationCardInfo) -> str:
    rows = [("Teacher", _teacher_link(info.teacher_id) if info.teacher_id else "—")]
    teacher = info.results.get("teacher")
    if teacher and (teacher.parameters is not None or teacher.accuracy is not None):
        rows.append(("Teacher parameters / accuracy", f"{_count(teacher.parameters)} / {_percent(teacher)}"))
    rows.append(("Dataset", info.dataset or "—"))
    if info.loss:
        rows.append(("Distillation loss", f"`{info.loss}`: {LOSS_FORMULAS.get(info.loss, info.loss)}"))
    rows.append(("alpha (weight of the teacher term)", _plain(info.alpha)))
    rows.append(("Temperature T", _plain(info.temperature)))
    if info.loss_weights is not None:
        rows.append(("Soft / hard loss weights", f"{info.loss_weights[0]:g} / {info.loss_weights[1]:g}"))
    rows += [(key.replace("_", " ").capitalize(), _plain(value)) for key, value in info.training.items()]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"## Distillation\n\n| Setting | Value |\n|---|---|\n{table}\n"


def _results_section(info: DistillationCardInfo) -> str:
    if not info.results:
        return "## Results\n\nNo evaluation was recorded for this run.\n"
    lines = ["| Model | Parameters | Accuracy | Agreement with teacher | Latency (ms) |", "|---|---|---|---|---|"]
    for key, label in RESULT_ROWS:
        row = info.results.get(key)
        if row is None:
            continue
        name = f"{label} (`{row.model_name}`)" if row.model_name else label
        agreement = f"{100 * row.agreement:.2f}%" if row.agreement is not None else "—"
        latency = f"{row.latency_ms:.2f}" if row.latency_ms is not None else "—"
        lines.append(f"| {name} | {_count(row.parameters)} | {_percent(row)} | {agreement} | {latency} |")
    device = f" Latency was measured on {info.device}." if info.device else ""
    note = "Accuracy on the evaluation split; mean ± std over seeds where several were run." + device
    return "## Results\n\n" + "\n".join(lines) + f"\n\n{note}\n"


def _usage_section(info: DistillationCardInfo) -> str:
    repo = info.repo_id or info.model_name
    if info.library_name == "timm" and info.custom_timm_build:
        code = (
            "from hf_distill.timm_models import load_image_model\n\n"
            f'model = load_image_model("{repo}").eval()  # rebuilds the modified stem timm cannot\n'
        )
    elif info.library_name == "timm":
        code = (
            "import timm\n\n"
            f'model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()\n'
            "config = timm.data.resolve_data_config({}, model=model)\n"
            "transform = timm.data.create_transform(**config)\n"
            "logits = model(transform(image).unsqueeze(0))  # image: a PIL image\n"
        )
    elif info.library_name == "transformers":
        auto_class = info.auto_class or "AutoModel"
        image = "Image" in auto_class
        processor, variable = ("AutoImageProcessor", "processor") if image else ("AutoTokenizer", "tokenizer")
        code = (
            f"from transformers import {processor}, {auto_class}\n\n"
            f'{variable} = {processor}.from_pretrained("{repo}")\n'
            f'model = {auto_class}.from_pretrained("{repo}")\n'
        )
    else:
        code = (
            "from huggingface_hub import hf_hub_download\nfrom safetensors.torch import load_file\n\n"
            f'state_dict = load_file(hf_hub_download("{repo}", "{WEIGHTS_NAME}"))\n'
            "model.load_state_dict(state_dict)  # model: an instance of the student's class\n"
        )
    return f"## How to use\n\n```python\n{code}```\n"


def _teacher_link(teacher_id: str) -> str:
    return f"[{teacher_id}](https://huggingface.co/{teacher_id})" if is_hub_model_id(teacher_id) else f"`{teacher_id}`"


def _count(parameters: int | None) -> str:
    if parameters is None:
        return "—"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.2f}{suffix}"
    return str(parameters)


def _percent(row: ModelResult) -> str:
    if row.accuracy is None:
        return "—"
    std = f" ± {100 * row.accuracy_std:.2f}" if row.accuracy_std else ""
    return f"{100 * row.accuracy:.2f}{std}%"


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower()).strip("-") or "dataset"


# ---- Gathering the facts --------------------------------------------------------------------------------------------


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
    from .modeling import count_parameters

    args, student = trainer.args, _unwrap(trainer.model)
    teacher = getattr(trainer, "teacher_model", None)
    teacher = _unwrap(teacher) if teacher is not None else None
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
    info = _student_info(student, kwargs.get("model_name") or _name_from(repo_id, output_dir), repo_id)
    info.teacher_id = kwargs.get("finetuned_from") or (_model_id(teacher) if teacher is not None else None)
    info.alpha, info.temperature = getattr(args, "alpha", None), getattr(args, "temperature", None)
    info.loss = getattr(args, "distillation_loss", None)
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
    info.results = {
        "teacher": ModelResult(
            info.teacher_id,
            count_parameters(teacher) if teacher is not None else None,
            metrics.get("eval_teacher_accuracy"),
        ),
        "student_distilled": ModelResult(
            info.student_architecture,
            count_parameters(student),
            metrics.get("eval_accuracy"),
            agreement=metrics.get("eval_teacher_agreement"),
        ),
    }
    if teacher is None:
        info.results.pop("teacher")
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
    distilled = ModelResult(info.student_architecture, _safetensors_parameters(folder / WEIGHTS_NAME))
    distilled.accuracy, distilled.agreement = metrics.get("eval_accuracy"), metrics.get("eval_teacher_agreement")
    info.results = {"student_distilled": distilled}
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


def _model_id(model: nn.Module) -> str:
    """Hub id (or name) of a model: transformers' `name_or_path`, timm's `hf_hub_id`/architecture, else its class."""
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if name:
        return name if is_hub_model_id(name) else f"{type(model).__name__} (local checkpoint)"
    pretrained_cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(pretrained_cfg, dict) and pretrained_cfg.get("architecture"):
        tag = f".{pretrained_cfg['tag']}" if pretrained_cfg.get("tag") else ""
        return pretrained_cfg.get("hf_hub_id") or f"{pretrained_cfg['architecture']}{tag}"
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
    dataset_id = report.get("dataset_id") or (
        report.get("dataset") if is_hub_model_id(report.get("dataset")) else None
    )
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
    total = 0
    for key, entry in header.items():
        if key == "__metadata__" or key.endswith(buffers):
            continue
        size = 1
        for dim in entry["shape"]:
            size *= dim
        total += size
    return total
