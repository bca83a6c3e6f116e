"""PNG plots for comparison reports: learning curves, confusion matrices, per-class errors, soft labels vs T."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .tables import ROLE_TITLES  # noqa: E402

COLORS = {"teacher": "tab:gray", "student_scratch": "tab:blue", "student_distilled": "tab:orange"}


def _save(fig: plt.Figure, path: str) -> str:
    """Lay out, write `fig` as a PNG to `path`, free it, and return `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def soft_labels(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) along the last axis; (N, C) → (N, C)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def soft_label_entropy(logits: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """Mean entropy H(p_T) = -Σ_c p_T,c log p_T,c in nats of the soft labels at each T; returns shape (len(T),).

    H grows from ≈0 (confident, T→0) to log C (uniform, T→∞).
    """
    out = []
    for t in temperatures:
        p = soft_labels(logits, t)
        out.append(float(np.mean(-(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1))))
    return np.asarray(out)


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(h["epoch"], h[key]) for h in history if key in h and "epoch" in h]
    return [p[0] for p in points], [p[1] for p in points]


def plot_learning_curves(histories: dict[str, list[list[dict[str, Any]]]], path: str) -> str:
    """Training cross-entropy on the labels and eval accuracy vs epoch, one colour per model, one line per seed.

    The cross-entropy is the logged `hard_loss` (the full `loss` of a distilled run also holds the soft term).

    Args:
        histories: role → one `trainer.state.log_history` per seed.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for role, runs in histories.items():
        color = COLORS.get(role)
        for i, history in enumerate(runs):
            label = ROLE_TITLES.get(role, role) if i == 0 else None
            key = "hard_loss" if any("hard_loss" in h for h in history) else "loss"
            ax_loss.plot(*_series(history, key), color=color, alpha=0.8, marker=".", label=label)
            ax_acc.plot(*_series(history, "eval_accuracy"), color=color, alpha=0.8, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy on labels", title="Training loss (hard-label part)")
    ax_acc.set(xlabel="epoch", ylabel="eval accuracy", title="Eval accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrices(
    matrices: dict[str, np.ndarray], class_names: Sequence[str], path: str, runs: dict[str, int] | None = None
) -> str:
    """Confusion matrices (true class → predicted class), one panel per model: counts, coloured by row rate.

    `runs` gives the number of seeds summed in each matrix, shown in the panel title.
    """
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4))
    axes = np.atleast_1d(axes)
    n = len(class_names)
    for ax, (role, matrix) in zip(axes, matrices.items(), strict=True):
        m = np.asarray(matrix, dtype=np.float64)
        rates = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if n <= 20:
            ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0, fontsize=7)
            ax.set_yticks(range(n), class_names, fontsize=7)
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(
                            j,
                            i,
                            int(m[i, j]),
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black",
                        )
        title = ROLE_TITLES.get(role, role)
        if runs and runs.get(role, 1) > 1:
            title += f" ({runs[role]} seeds summed)"
        ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def plot_per_class_error(errors: dict[str, Sequence[float | None]], class_names: Sequence[str], path: str) -> str:
    """Grouped bars of the error rate of each true class, one colour per model."""
    n, k = len(class_names), len(errors)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * n * k), 3.8))
    for i, (role, values) in enumerate(errors.items()):
        heights = [np.nan if v is None else 100 * v for v in values]
        ax.bar(
            np.arange(n) + (i - (k - 1) / 2) * width,
            heights,
            width,
            color=COLORS.get(role),
            label=ROLE_TITLES.get(role, role),
        )
    ax.set_xticks(range(n), class_names, rotation=90 if n > 12 else 0)
    ax.set(xlabel="true class", ylabel="error (%)", title="Per-class error")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_temperature_effect(
    teacher_logits: np.ndarray,
    temperatures: Sequence[float],
    path: str,
    class_names: Sequence[str] | None = None,
    example_temperatures: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    example_index: int | None = None,
) -> str:
    """Soft labels of one example at a few T (left) and mean entropy / max probability vs T (right).

    The example is the eval image whose teacher top-2 logits are closest (by default), where "dark
    knowledge" is most visible.
    """
    logits = np.asarray(teacher_logits, dtype=np.float64)
    n_classes = logits.shape[-1]
    if example_index is None:
        top2 = np.sort(logits, axis=-1)[:, -2:]
        example_index = int(np.argmin(top2[:, 1] - top2[:, 0]))
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    fig, (ax_bar, ax_h) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(example_temperatures)
    for i, t in enumerate(example_temperatures):
        p = soft_labels(logits[example_index], t)
        offset = (i - (len(example_temperatures) - 1) / 2) * width
        ax_bar.bar(np.arange(n_classes) + offset, p, width, label=f"T={t:g}")
    ax_bar.set_xticks(range(n_classes), names, rotation=90 if n_classes > 12 else 0)
    ax_bar.set(xlabel="class", ylabel="probability", title=f"Teacher soft labels, eval example {example_index}")
    ax_bar.legend()
    entropy = soft_label_entropy(logits, temperatures)
    max_prob = [float(soft_labels(logits, t).max(axis=-1).mean()) for t in temperatures]
    ax_h.plot(temperatures, entropy, marker="o", label="mean entropy (nats)")
    ax_h.axhline(np.log(n_classes), color="gray", ls="--", label=f"uniform: log {n_classes}")
    ax_h.set_xscale("log")
    ax_h.set(xlabel="temperature T", ylabel="entropy (nats)", title="Soft labels vs temperature (eval set)")
    ax_p = ax_h.twinx()
    ax_p.plot(temperatures, max_prob, marker="s", color="tab:red", label="mean max probability")
    ax_p.set_ylabel("max probability")
    handles = ax_h.get_legend_handles_labels()[0] + ax_p.get_legend_handles_labels()[0]
    ax_h.legend(handles=handles, loc="center right")
    return _save(fig, path)
