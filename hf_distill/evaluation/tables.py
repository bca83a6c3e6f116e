"""The Markdown tables of a comparison report and the number formats they share."""

from __future__ import annotations

import math
from typing import Any

MODEL_ROLES = ("teacher", "student_scratch", "student_distilled")
ROLE_TITLES = {
    "teacher": "Teacher",
    "student_scratch": "Student from scratch",
    "student_distilled": "Distilled student",
}


def pct(value: float | None, std: float | None = None) -> str:
    """`0.9711, 0.0022` → `"97.11 ± 0.22"` (percent); `"–"` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def points(value: float | None) -> str:
    """A difference of accuracies in percentage points, signed: `0.0022` → `"+0.22"`."""
    return "–" if value is None else f"{100 * value:+.2f}"


def interval(ci: list[float] | None) -> str:
    """A 95% interval in percentage points: `[-0.001, 0.004]` → `"[-0.10, +0.40]"`; `"–"` without one."""
    return "–" if not ci else f"[{points(ci[0])}, {points(ci[1])}]"


def models_table(report: dict[str, Any]) -> str:
    """The main Markdown table: one row per model with cost, accuracy (%) and agreement with the teacher (%)."""
    rows = [
        "| Model | Architecture | Parameters | Size (MB) | Accuracy (%) | Agreement with teacher (%) "
        "| Latency, batch 1 (ms) | Throughput (examples/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for role, entry in report["models"].items():
        rows.append(
            f"| {ROLE_TITLES.get(role, role)} | {entry['model_name']} | {num(entry.get('parameters'), ',')} "
            f"| {num(entry.get('size_mb'), '.2f')} | {pct(entry['accuracy'], entry.get('accuracy_std'))} "
            f"| {pct(entry.get('agreement'))} | {num(entry.get('latency_ms'), '.2f')} "
            f"| {num(entry.get('throughput_per_s'), ',.0f')} |"
        )
    return "\n".join(rows)


def per_class_table(report: dict[str, Any]) -> str:
    """Markdown table of per-class error (%) for each model."""
    roles = list(report["models"])
    header = "| Class | " + " | ".join(ROLE_TITLES.get(r, r) for r in roles) + " |"
    rows = [header, "|---" + "|---:" * len(roles) + "|"]
    for i, name in enumerate(report["class_names"]):
        cells = [pct(report["models"][r]["per_class_error"][i]) for r in roles]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _difference(item: dict[str, Any]) -> float:
    return item.get("difference_mean", item["student_distilled"] - item["student_scratch"])


def method_name(item: dict[str, Any]) -> str:
    """The name of the method an entry's distilled students learned by (`"–"` when the entry does not say)."""
    return (item.get("method") or {}).get("name", "–")


def describe_method(entry: dict[str, Any]) -> str:
    """One line for reports: `dkd+at: dkd (temperature=4, ...) + at on layer1→layer1 (weight 1000), ...`."""
    pieces = []
    term = entry.get("teacher_term")
    if term:
        settings = ", ".join(f"{k}={v}" for k, v in term.items() if k != "method")
        pieces.append(f"{term['method']} ({settings})")
    for feature in entry.get("feature_terms", []):
        pieces.append(
            f"{feature['loss']} on {feature['student_module']}→{feature['teacher_module']} "
            f"(weight {feature['weight']:g})"
        )
    hard = entry.get("hard_weight")
    pieces.append(f"cross-entropy (weight {hard:g})" if hard is not None else "cross-entropy")
    return f"{entry['name']}: " + " + ".join(pieces)


def settings_table(settings: list[dict[str, Any]]) -> str:
    """The settings side by side: sizes, budget, mean ± std accuracy (%) and the paired difference with its CI."""
    rows = [
        "| Setting | Method | Labelled examples | Unlabelled examples | Optimizer steps | Teacher (%) "
        "| Student from scratch (%) | Distilled student (%) | Distilled − scratch (points) | 95% CI (points) "
        "| Verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for item in settings:
        rows.append(
            f"| {item.get('title', item['setting'])} | {method_name(item)} | {item['labelled_examples']:,} "
            f"| {item['unlabelled_examples']:,} | {num(item.get('max_steps'), ',')} | {pct(item.get('teacher'))} "
            f"| {pct(item['student_scratch'], item.get('student_scratch_std'))} "
            f"| {pct(item['student_distilled'], item.get('student_distilled_std'))} | {points(_difference(item))} "
            f"| {interval(item.get('difference_ci95'))} | {item.get('verdict', '–')} |"
        )
    return "\n".join(rows)


def per_seed_table(settings: list[dict[str, Any]]) -> str:
    """Per seed and setting: the scratch and distilled accuracies (%) and their difference (points)."""
    header, rule = "| Seed |", "|---:|"
    for item in settings:
        title = item.get("title", item["setting"])
        header += f" {title}: scratch | {title}: distilled | {title}: difference |"
        rule += "---:|---:|---:|"
    rows = [header, rule]
    for i, seed in enumerate(settings[0]["seeds"]):
        cells = []
        for item in settings:
            scratch = item["student_scratch_accuracies"][i]
            distilled = item["student_distilled_accuracies"][i]
            cells += [pct(scratch), pct(distilled), points(distilled - scratch)]
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ablation_table(ablation: list[dict[str, Any]]) -> str:
    """Markdown table of ablation settings: teacher, scratch and distilled mean accuracy (%), the paired difference
    and its 95% CI.

    Optional keys of an entry: `train_examples`, `max_steps`, `teacher` (accuracy), `student_scratch_std`,
    `student_distilled_std`, `difference_mean`, `difference_ci95`, `verdict`.
    """
    rows = [
        "| Setting | Method | Training examples | Optimizer steps | Teacher (%) | Student from scratch (%) "
        "| Distilled student (%) | Distilled − scratch (points) | 95% CI (points) | Verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for item in ablation:
        rows.append(
            f"| {item['setting']} | {method_name(item)} | {item.get('train_examples', '–')} "
            f"| {num(item.get('max_steps'), ',')} "
            f"| {pct(item.get('teacher'))} | {pct(item['student_scratch'], item.get('student_scratch_std'))} "
            f"| {pct(item['student_distilled'], item.get('student_distilled_std'))} | {points(_difference(item))} "
            f"| {interval(item.get('difference_ci95'))} | {item.get('verdict', '–')} |"
        )
    return "\n".join(rows)


def generations_table(generations: list[dict[str, Any]]) -> str:
    """Born-again generations: each one's teacher, method, budget, mean ± std accuracy (%), and its paired
    difference with the students from scratch (points) with the 95% CI."""
    rows = [
        "| Generation | Teacher | Method | Optimizer steps | Student (%) | Student from scratch (%) "
        "| Generation − scratch (points) | 95% CI (points) | Verdict |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for item in generations:
        rows.append(
            f"| {item['generation']} | {item['teacher']} | {method_name(item)} | {num(item.get('max_steps'), ',')} "
            f"| {pct(item['student_distilled'], item.get('student_distilled_std'))} "
            f"| {pct(item['student_scratch'], item.get('student_scratch_std'))} | {points(_difference(item))} "
            f"| {interval(item.get('difference_ci95'))} | {item.get('verdict', '–')} |"
        )
    return "\n".join(rows)


def generations_seed_table(generations: list[dict[str, Any]]) -> str:
    """Per seed: the student from scratch and each generation's accuracy (%)."""
    header = "| Seed | Student from scratch |" + "".join(f" Generation {g['generation']} |" for g in generations)
    rows = [header, "|---:|---:|" + "---:|" * len(generations)]
    for i, seed in enumerate(generations[0]["seeds"]):
        cells = [pct(generations[0]["student_scratch_accuracies"][i])]
        cells += [pct(g["student_distilled_accuracies"][i]) for g in generations]
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
