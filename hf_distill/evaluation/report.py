"""Teacher / student-from-scratch / distilled-student comparison reports: report.json, report.md, a summary."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import load_metric
from .rendering import format_summary, render_markdown
from .tables import MODEL_ROLES, ROLE_TITLES

__all__ = [
    "MODEL_ROLES",
    "ROLE_TITLES",
    "build_report",
    "confusion_matrix",
    "format_summary",
    "model_entry",
    "per_class_error",
    "prediction_metrics",
    "render_markdown",
    "write_report",
]


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


def write_report(report: dict[str, Any], output_dir: str) -> tuple[str, str]:
    """Write `report.json` and `report.md` into `output_dir`; return their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path, md_path = os.path.join(output_dir, "report.json"), os.path.join(output_dir, "report.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(md_path, "w") as f:
        f.write(render_markdown(report))
    return json_path, md_path
