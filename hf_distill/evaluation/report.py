"""Teacher / student-from-scratch / distilled-student comparison reports: report.json, report.md, a summary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import load_metric
from .teacher_settings import describe_settings

MODEL_ROLES = ("teacher", "student_scratch", "student_distilled")
ROLE_TITLES = {
    "teacher": "Teacher",
    "student_scratch": "Student from scratch",
    "student_distilled": "Distilled student",
}


def confusion_matrix(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts `C[i, j]` of examples of true class `i` predicted as `j`; shape (num_classes, num_classes)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def per_class_error(matrix: np.ndarray) -> list[float | None]:
    """Error rate of each true class, `1 - C[i, i] / sum_j C[i, j]`; `None` for classes absent from the labels."""
    totals = matrix.sum(axis=1)
    return [None if totals[i] == 0 else float(1.0 - matrix[i, i] / totals[i]) for i in range(len(matrix))]


def prediction_metrics(
    predictions: Sequence[int],
    labels: Sequence[int],
    num_classes: int,
    reference_predictions: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Accuracy, confusion matrix, per-class error and top-1 agreement with reference (teacher) predictions.

    Accuracy and agreement go through the `accuracy` metric module of `evaluate` shipped with the package.

    Args:
        predictions, labels: class indices, shape (N,).
        reference_predictions: the teacher's class indices on the same N examples, or `None`.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape.")
    matrix = confusion_matrix(predictions, labels, num_classes)
    accuracy = load_metric("accuracy")
    agreement = None
    if reference_predictions is not None:
        agreement = accuracy.compute(predictions=predictions, references=np.asarray(reference_predictions))["accuracy"]
    return {
        "accuracy": accuracy.compute(predictions=predictions, references=labels)["accuracy"],
        "agreement": agreement,
        "confusion_matrix": matrix.tolist(),
        "per_class_error": per_class_error(matrix),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; `None` for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def model_entry(model_name: str, runs: Sequence[dict[str, Any]], cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `models` entry of the report from the `prediction_metrics` of each seed's run.

    `accuracy` is the mean over runs, `accuracy_std` the sample std (ddof=1), `accuracies` the per-run values;
    `confusion_matrix` is summed over runs, so `per_class_error` is the mean over runs (same eval set).
    `cost` adds `parameters`, `size_mb`, `latency_ms`, `throughput_per_s` (see `benchmark.BenchmarkResult`).
    """
    if not runs:
        raise ValueError(f"No runs to report for {model_name!r}.")
    accuracies = [r["accuracy"] for r in runs]
    accuracy, accuracy_std = _mean_std(accuracies)
    agreements = [r["agreement"] for r in runs if r.get("agreement") is not None]
    matrix = np.sum([np.asarray(r["confusion_matrix"]) for r in runs], axis=0)
    entry: dict[str, Any] = {"model_name": model_name}
    for key in ("parameters", "size_mb", "latency_ms", "throughput_per_s"):
        entry[key] = (cost or {}).get(key)
    entry.update(
        accuracy=accuracy,
        accuracy_std=accuracy_std,
        accuracies=accuracies,
        agreement=_mean_std(agreements)[0] if agreements else None,
        per_class_error=per_class_error(matrix),
        confusion_matrix=matrix.tolist(),
    )
    return entry


def build_report(
    task: str,
    dataset: str,
    class_names: Sequence[str],
    distillation: dict[str, Any],
    models: dict[str, dict[str, Any]],
    device: str,
    ablation: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the report dict (the shared schema); `extra` keys (plots, timings, notes...) are added as given."""
    missing = [role for role in MODEL_ROLES if role not in models]
    if missing:
        raise ValueError(f"The report needs models {list(MODEL_ROLES)}; missing {missing}.")
    report = {
        "task": task,
        "dataset": dataset,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "distillation": dict(distillation),
        "device": device,
        "models": {role: models[role] for role in MODEL_ROLES},
    }
    if ablation is not None:
        report["ablation"] = ablation
    report.update(extra)
    return report


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def models_table(report: dict[str, Any]) -> str:
    """The main Markdown table: one row per model with cost, accuracy (%) and agreement with the teacher (%)."""
    rows = [
        "| Model | Architecture | Parameters | Size (MB) | Accuracy (%) | Agreement with teacher (%) "
        "| Latency, batch 1 (ms) | Throughput (examples/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for role, entry in report["models"].items():
        rows.append(
            f"| {ROLE_TITLES.get(role, role)} | {entry['model_name']} | {_num(entry.get('parameters'), ',')} "
            f"| {_num(entry.get('size_mb'), '.2f')} | {_pct(entry['accuracy'], entry.get('accuracy_std'))} "
            f"| {_pct(entry.get('agreement'))} | {_num(entry.get('latency_ms'), '.2f')} "
            f"| {_num(entry.get('throughput_per_s'), ',.0f')} |"
        )
    return "\n".join(rows)


def per_class_table(report: dict[str, Any]) -> str:
    """Markdown table of per-class error (%) for each model."""
    roles = list(report["models"])
    header = "| Class | " + " | ".join(ROLE_TITLES.get(r, r) for r in roles) + " |"
    rows = [header, "|---" + "|---:" * len(roles) + "|"]
    for i, name in enumerate(report["class_names"]):
        cells = [_pct(report["models"][r]["per_class_error"][i]) for r in roles]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ablation_table(ablation: list[dict[str, Any]]) -> str:
    """Markdown table of ablation settings: teacher, scratch and distilled mean accuracy (%) and the difference.

    Optional keys of an entry: `train_examples`, `teacher` (accuracy), `student_scratch_std`, `student_distilled_std`.
    """
    rows = [
        "| Setting | Training examples | Teacher (%) | Student from scratch (%) | Distilled student (%) "
        "| Distilled − scratch (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for item in ablation:
        scratch, distilled = item["student_scratch"], item["student_distilled"]
        rows.append(
            f"| {item['setting']} | {item.get('train_examples', '–')} | {_pct(item.get('teacher'))} "
            f"| {_pct(scratch, item.get('student_scratch_std'))} "
            f"| {_pct(distilled, item.get('student_distilled_std'))} | {100 * (distilled - scratch):+.2f} |"
        )
    return "\n".join(rows)


def _teacher_lines(teacher: dict[str, Any] | None) -> list[str]:
    """The teacher as it is: its Hub id or name, where it comes from, the settings recorded when it was trained."""
    if not teacher:
        return []
    origin = f" ({teacher['origin']})" if teacher.get("origin") else ""
    settings = teacher.get("settings")
    trained = f"trained with {describe_settings(settings)}" if settings else "its training settings are not recorded"
    return [f"Teacher: {teacher.get('hub_id') or teacher.get('name')}{origin}; {trained}."]


def render_markdown(report: dict[str, Any]) -> str:
    """`report.md`: settings, the models table, ratios, per-class errors, ablation and plots."""
    models = report["models"]
    teacher, scratch, distilled = (models[r] for r in MODEL_ROLES)
    settings = ", ".join(f"{k}={v}" for k, v in report["distillation"].items())
    lines = [
        f"# Distillation report: {report['dataset']}",
        "",
        f"Task: {report['task']}, {report['num_classes']} classes. Measured on {report['device']}.",
        f"Distillation settings: {settings}.",
        *_teacher_lines(report.get("teacher")),
        "",
        "Student accuracies are mean ± sample std over seeds; each seed's values are in report.json.",
        "Latency is the median time of one forward pass on one example; throughput uses batched forward passes.",
        "",
        models_table(report),
        "",
        f"**Distilled − scratch: {100 * (distilled['accuracy'] - scratch['accuracy']):+.2f} points** "
        f"(teacher − distilled: {100 * (teacher['accuracy'] - distilled['accuracy']):+.2f}).",
    ]
    if teacher.get("parameters") and distilled.get("parameters"):
        lines.append(f"The student has {teacher['parameters'] / distilled['parameters']:.1f}× fewer parameters")
        if teacher.get("latency_ms") and distilled.get("latency_ms"):
            lines[-1] += f" and answers {teacher['latency_ms'] / distilled['latency_ms']:.1f}× faster at batch 1"
        lines[-1] += "."
    for note in report.get("notes", []):
        lines += ["", note]
    lines += ["", "## Per-class error (%)", "", per_class_table(report)]
    if report.get("ablation"):
        lines += [
            "",
            "## Ablation",
            "",
            "Mean accuracy over the same seeds for each setting, everything else as above. Settings of the "
            "distillation loss only (alpha, temperature) reuse the students from scratch above; "
            "max_train_samples retrains the teacher on that labelled subset too.",
            "",
            ablation_table(report["ablation"]),
        ]
    if report.get("temperature_entropy"):
        te = report["temperature_entropy"]
        lines += [
            "",
            "## Teacher soft labels vs temperature",
            "",
            f"Mean entropy (nats) of softmax(teacher logits / T) on the eval set; uniform = {te['max_entropy']:.3f}.",
            "",
            "| T | " + " | ".join(f"{t:g}" for t in te["temperatures"]) + " |",
            "|---" * (len(te["temperatures"]) + 1) + "|",
            "| entropy | " + " | ".join(f"{h:.3f}" for h in te["entropy"]) + " |",
        ]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], output_dir: str) -> tuple[str, str]:
    """Write `report.json` and `report.md` into `output_dir`; return their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path, md_path = os.path.join(output_dir, "report.json"), os.path.join(output_dir, "report.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(md_path, "w") as f:
        f.write(render_markdown(report))
    return json_path, md_path


def format_summary(report: dict[str, Any], output_dir: str | None = None) -> str:
    """A one-screen plain-text summary of the comparison, for the end of a run."""
    models = report["models"]
    lines = [f"Distillation on {report['dataset']} ({report['device']})", ""]
    lines.append(f"{'model':<22}{'architecture':<28}{'params':>11}{'MB':>8}{'acc %':>16}{'agree %':>9}{'ms/ex':>8}")
    for role, e in models.items():
        params = _num(e.get("parameters"), ",")
        size = _num(e.get("size_mb"), ".2f")
        lat = _num(e.get("latency_ms"), ".2f")
        lines.append(
            f"{ROLE_TITLES.get(role, role):<22}{e['model_name'][:27]:<28}{params:>11}{size:>8}"
            f"{_pct(e['accuracy'], e.get('accuracy_std')):>16}{_pct(e.get('agreement')):>9}{lat:>8}"
        )
    gain = models["student_distilled"]["accuracy"] - models["student_scratch"]["accuracy"]
    seeds = len(models["student_scratch"]["accuracies"])
    lines += ["", f"distilled − scratch: {100 * gain:+.2f} points (mean over {seeds} seeds)"]
    for item in report.get("ablation") or []:
        diff = item["student_distilled"] - item["student_scratch"]
        lines.append(f"  ablation {item['setting']}: {100 * diff:+.2f} points")
    if output_dir:
        lines += ["", f"report: {os.path.join(output_dir, 'report.md')}"]
    return "\n".join(lines)
