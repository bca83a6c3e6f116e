"""Metrics through `evaluate`, with the modules we need shipped in the package so that they load offline."""

from collections.abc import Callable
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

SHIPPED_METRICS_DIR = Path(__file__).parent


def shipped_metrics() -> list[str]:
    """Names of the `evaluate` metric modules shipped with hf_distill."""
    return sorted(path.name for path in SHIPPED_METRICS_DIR.iterdir() if (path / f"{path.name}.py").is_file())


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load(name)`, from the copy shipped with hf_distill when there is one (no network needed).

    Any other name or path goes to `evaluate.load` as is (a Hub metric needs network access).
    """
    if name in shipped_metrics():
        return evaluate.load(str(SHIPPED_METRICS_DIR / name), **kwargs)
    return evaluate.load(name, **kwargs)


def classification_metrics(metric_names: tuple[str, ...] = ("accuracy",)) -> Callable[[EvalPrediction], dict]:
    """A `compute_metrics` for the Trainer: argmax of the logits scored by each `evaluate` metric.

    Works for sequence-level `(N, C)` and token-level `(N, L, C)` logits; positions labelled -100 are skipped.
    """
    metrics = [load_metric(name) for name in metric_names]

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        labels = np.asarray(eval_prediction.label_ids)
        predictions = np.asarray(logits).argmax(-1)
        keep = labels != -100
        results: dict[str, float] = {}
        for metric in metrics:
            results.update(metric.compute(predictions=predictions[keep], references=labels[keep]))
        return results

    return compute_metrics
