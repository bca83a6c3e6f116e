"""The report as text: `report.md` and the one-screen summary printed at the end of a run."""

from __future__ import annotations

import os
from typing import Any

from .tables import (
    MODEL_ROLES,
    ROLE_TITLES,
    ablation_table,
    describe_method,
    generations_seed_table,
    generations_table,
    interval,
    models_table,
    num,
    pct,
    per_class_table,
    per_seed_table,
    points,
    settings_table,
)
from .teacher_settings import describe_settings


def _teacher_lines(teacher: dict[str, Any] | None) -> list[str]:
    """The teacher as it is: its Hub id or name, where it comes from, the settings recorded when it was trained."""
    if not teacher:
        return []
    origin = f" ({teacher['origin']})" if teacher.get("origin") else ""
    settings = teacher.get("settings")
    trained = f"trained with {describe_settings(settings)}" if settings else "its training settings are not recorded"
    return [f"Teacher: {teacher.get('hub_id') or teacher.get('name')}{origin}; {trained}."]


def _settings_lines(report: dict[str, Any]) -> list[str]:
    """The settings side by side, what each trains on, the budget, and how to read the statistics."""
    settings = report["settings"]
    first = settings[0]
    n_eval, seeds = first["eval_examples"], len(first["seeds"])
    lines = [
        "## When distillation pays",
        "",
        f"The same teacher, the same student architecture and the same budget in every run: "
        f"{first['max_steps']:,} optimizer steps for each student, from scratch or distilled, in every setting. "
        f"Each of the {seeds} seeds trains one student from scratch and one distilled student on the same data; "
        "the difference is taken seed by seed (distilled − scratch), and the table gives its mean and its 95% "
        f"Student's t-interval (t with n − 1 = {seeds - 1} degrees of freedom). A difference is called significant "
        "only when the interval excludes 0. Accuracy is measured on every one of the "
        f"{n_eval:,} eval examples: one example is {100 / n_eval:.2f} points, one point is {n_eval / 100:g} examples.",
        "",
        settings_table(settings),
        "",
    ]
    for item in settings:
        if item["unlabelled_examples"] == 0:
            lines.append(
                f"- **{item['title']}**: both students train on the {item['labelled_examples']:,} labelled "
                "training examples."
            )
        else:
            share = item["labelled_examples"] / (item["labelled_examples"] + item["unlabelled_examples"])
            lines.append(
                f"- **{item['title']}**: each seed keeps the labels of a class-stratified part of the training set "
                f"({item['labelled_examples']:,} examples, {share:.0%}); the student from scratch trains on that part "
                "alone, the distilled student on that part plus the other "
                f"{item['unlabelled_examples']:,} examples without their labels (label -100: the soft loss only)."
            )
    trained = report.get("teacher", {}).get("trained_on_train_set")
    if trained:
        lines.append(
            f"- The teacher was trained before the students, on all {first['labelled_examples']:,} labelled training "
            "examples, and is the same in every setting."
        )
    elif trained is None:
        lines.append("- The teacher is the same in every setting; what it was trained on is stated above.")
    lines += ["", "Per seed: accuracy (%) and distilled − scratch (points).", "", per_seed_table(settings), ""]
    return lines


def _generations_lines(report: dict[str, Any]) -> list[str]:
    """Born-again generations: each generation against the same-data students from scratch, then per seed."""
    generations = report["generations"]
    return [
        "## Born-again generations",
        "",
        "Generation 1 is the same-data setting's distilled student; each later generation is a fresh student "
        "distilled from the previous generation's student of the same seed, with the same method, data and budget "
        "(Furlanello et al., 2018). Each is compared seed by seed with the same students from scratch.",
        "",
        generations_table(generations),
        "",
        "Per seed: accuracy (%).",
        "",
        generations_seed_table(generations),
        "",
    ]


def _ablation_methods(report: dict[str, Any]) -> list[str]:
    """The methods of ablation settings that differ from the run's, one line each."""
    main = (report.get("method") or {}).get("name")
    lines = []
    for item in report["ablation"]:
        method = item.get("method")
        if method and method.get("name") != main:
            lines.append(f"- {item['setting']}: {describe_method(method)}.")
    return ["", *lines] if lines else []


def render_markdown(report: dict[str, Any]) -> str:
    """`report.md`: settings, the two settings side by side, the models, per-class errors, ablation and plots."""
    models = report["models"]
    teacher, scratch, distilled = (models[r] for r in MODEL_ROLES)
    settings = ", ".join(f"{k}={v}" for k, v in report["distillation"].items())
    lines = [
        f"# Distillation report: {report['dataset']}",
        "",
        f"Task: {report['task']}, {report['num_classes']} classes. Measured on {report['device']}.",
        f"Distillation settings: {settings}.",
        *([f"Method: {describe_method(report['method'])}."] if report.get("method") else []),
        *_teacher_lines(report.get("teacher")),
        "",
    ]
    if report.get("settings"):
        lines += _settings_lines(report)
    if report.get("generations"):
        lines += _generations_lines(report)
    lines += [
        "## Models" + (" (same-data setting)" if report.get("settings") else ""),
        "",
        "Student accuracies are mean ± sample std over seeds; each seed's values are in report.json.",
        "Latency is the median time of one forward pass on one example; throughput uses batched forward passes.",
        "",
        models_table(report),
        "",
        f"Distilled − scratch: {100 * (distilled['accuracy'] - scratch['accuracy']):+.2f} points "
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
            "Further settings on the same data, over the same seeds, everything else as above; each is paired by "
            "seed and read like the table above. Settings of the distillation loss only (alpha, temperature) reuse "
            "the students from scratch above; max_train_samples retrains the teacher on that labelled subset too. "
            "Budgets are optimizer steps counted over the whole training set, with each setting's own epochs: "
            "fewer labelled examples train for as many steps, the teacher too.",
            "",
            ablation_table(report["ablation"]),
            *_ablation_methods(report),
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


def _summary_settings(report: dict[str, Any]) -> list[str]:
    settings = report["settings"]
    n_eval, seeds = settings[0]["eval_examples"], len(settings[0]["seeds"])
    lines = [
        "",
        f"distilled − scratch, paired by seed: mean and 95% t-interval over {seeds} seeds, in points; on all "
        f"{n_eval} eval examples (one example = {100 / n_eval:.2f} points)",
        f"{'setting':<14}{'labelled':>9}{'unlabelled':>11}{'steps':>7}{'scratch %':>16}{'distilled %':>16}"
        f"  {'difference [95% CI]':<26}verdict",
    ]
    for item in settings:
        difference = f"{points(item['difference_mean'])} {interval(item['difference_ci95'])}"
        lines.append(
            f"{item['title']:<14}{item['labelled_examples']:>9}{item['unlabelled_examples']:>11}"
            f"{item['max_steps']:>7}{pct(item['student_scratch'], item['student_scratch_std']):>16}"
            f"{pct(item['student_distilled'], item['student_distilled_std']):>16}  {difference:<26}{item['verdict']}"
        )
    return lines


def format_summary(report: dict[str, Any], output_dir: str | None = None) -> str:
    """A one-screen plain-text summary of the comparison, for the end of a run."""
    models = report["models"]
    lines = [f"Distillation on {report['dataset']} ({report['device']})", ""]
    if report.get("method"):
        lines[1:1] = [f"method {describe_method(report['method'])}"]
    width = max(28, 1 + max(len(e["model_name"]) for e in models.values()))  # long names kept whole
    header = f"{'params':>11}{'MB':>8}{'acc %':>16}{'agree %':>9}{'ms/ex':>8}"
    lines.append(f"{'model':<22}{'architecture':<{width}}{header}")
    for role, e in models.items():
        params = num(e.get("parameters"), ",")
        size = num(e.get("size_mb"), ".2f")
        lat = num(e.get("latency_ms"), ".2f")
        lines.append(
            f"{ROLE_TITLES.get(role, role):<22}{e['model_name']:<{width}}{params:>11}{size:>8}"
            f"{pct(e['accuracy'], e.get('accuracy_std')):>16}{pct(e.get('agreement')):>9}{lat:>8}"
        )
    if report.get("settings"):
        lines += _summary_settings(report)
    else:
        gain = models["student_distilled"]["accuracy"] - models["student_scratch"]["accuracy"]
        seeds = len(models["student_scratch"]["accuracies"])
        lines += ["", f"distilled − scratch: {100 * gain:+.2f} points (mean over {seeds} seeds)"]
    for item in report.get("generations") or []:
        difference = f"{points(item['difference_mean'])} {interval(item['difference_ci95'])}"
        lines.append(
            f"  generation {item['generation']} (teacher: {item['teacher']}): "
            f"{pct(item['student_distilled'], item['student_distilled_std'])} %, − scratch {difference} points "
            f"{item['verdict']}"
        )
    for item in report.get("ablation") or []:
        difference = item.get("difference_mean", item["student_distilled"] - item["student_scratch"])
        verdict = f" {interval(item.get('difference_ci95'))} {item['verdict']}" if "verdict" in item else ""
        lines.append(f"  ablation {item['setting']}: {points(difference)} points{verdict}")
    if output_dir:
        lines += ["", f"report: {os.path.join(output_dir, 'report.md')}"]
    return "\n".join(lines)
