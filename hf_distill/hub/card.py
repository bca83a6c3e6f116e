"""Model cards for distilled students: what they were distilled from, how, and how they compare."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from .files import WEIGHTS_NAME

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
    "dkd": "alpha · (dkd_alpha · TCKD + dkd_beta · NCKD) at temperature T + (1 − alpha) · CE(student, labels) "
    "(decoupled KD, Zhao et al. 2022)",
    "dist": "alpha · T² · (dist_beta · inter-class + dist_gamma · intra-class Pearson distance) + (1 − alpha) · "
    "CE(student, labels) (DIST, Huang et al. 2022)",
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
    """Everything a distilled student's model card says; `hf_distill.card_info` fills it from a trainer or a folder.

    `library_name` is `"timm"`, `"transformers"` or `None` (a plain PyTorch module). `teacher_id` is shown as
    "distilled from", linked to the Hub and set as `base_model` only when it is a Hub model id (`owner/name`) and
    no `teacher_origin` says otherwise; anything else (a timm architecture, a local folder) is shown as plain text,
    followed by `teacher_origin` (e.g. "trained locally by this recipe"). `training` holds the budget (epochs,
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
    teacher_origin: str | None = None
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


def is_hub_repo_id(name: str | None) -> bool:
    """True for a string that is a valid Hub repo id and not a local path (`uoft-cs/cifar10`, `cifar10`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_hub_model_id(name: str | None) -> bool:
    """True for a Hub model id with its owner, `owner/name` (`timm/resnet18.a1_in1k`), that is not a local path.

    A bare name is not one: timm's architectures (`resnet18`) and local folder names look the same.
    """
    return is_hub_repo_id(name) and "/" in name


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
        base_model=info.teacher_id if _hub_teacher(info) else None,
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
    teacher = _teacher_link(info) if info.teacher_id else "a teacher model"
    student = f"`{info.student_architecture}`" if info.student_architecture else "a student"
    dataset = f" on {info.dataset}" if info.dataset else ""
    library = {"timm": "timm", "transformers": "🤗 transformers"}.get(info.library_name or "", "PyTorch")
    return (
        f"# {info.model_name}\n\nThis model is {student} ({library}) distilled from {teacher}{dataset} by knowledge "
        "distillation with `hf_distill`: the student learns from the teacher's softened predictions as well as "
        "from the labels. The teacher is not part of this repository.\n"
    )


def _setup_section(info: DistillationCardInfo) -> str:
    rows = [("Teacher", _teacher_link(info) if info.teacher_id else "—")]
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
            "from hf_distill.recipes.timm_models import load_image_model\n\n"
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


def _hub_teacher(info: DistillationCardInfo) -> bool:
    """The teacher is a Hub model as it is: an `owner/name` id, not trained or fine-tuned elsewhere."""
    return info.teacher_origin is None and is_hub_model_id(info.teacher_id)


def _teacher_link(info: DistillationCardInfo) -> str:
    """A link for a Hub model, plain text for anything else: `` `resnet18` (trained locally by this recipe) ``."""
    if _hub_teacher(info):
        return f"[{info.teacher_id}](https://huggingface.co/{info.teacher_id})"
    return f"`{info.teacher_id}`" + (f" ({info.teacher_origin})" if info.teacher_origin else "")


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
