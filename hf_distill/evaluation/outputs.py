"""What a finished comparison writes: benchmarks of its models, plots, and report.json / report.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..config import DistillationTrainingArguments
from .arguments import ComparisonArguments, ComparisonSetup
from .benchmark import benchmark_model, device_description
from .plots import (
    plot_confusion_matrices,
    plot_learning_curves,
    plot_per_class_error,
    plot_temperature_effect,
    soft_label_entropy,
)
from .report import build_report, format_summary, model_entry, write_report

STUDENT_ROLES = ("student_scratch", "student_distilled")


@dataclass
class ComparisonResults:
    """What the runs of a comparison produced.

    Attributes:
        runs: the same-data setting's runs, role → one dict per seed (`seed`, `model`, `history`, metrics).
        settings: one `settings.setting_entry` per setting (same data, then the transfer set when run).
        ablation: one `ablation.ablation_entry` per ablation setting.
        timings: seconds spent on the teacher, the settings' students and the ablation.
        generations: one `generations.generation_entry` per born-again generation (none for a single one).
    """

    teacher: nn.Module
    teacher_metrics: dict[str, Any]
    teacher_history: list[dict[str, Any]]
    teacher_logits: np.ndarray
    runs: dict[str, list[dict[str, Any]]]
    settings: list[dict[str, Any]]
    ablation: list[dict[str, Any]]
    timings: dict[str, float]
    generations: list[dict[str, Any]] = field(default_factory=list)


def _teacher_loss(args: DistillationTrainingArguments, method: dict[str, Any]) -> str | None:
    """The distilled students' teacher term as the model card names it: `distillation_loss` for Hinton's soft
    targets, else `dkd` / `dist`; `+ logit standardization` when on; `None` for feature terms alone."""
    term = method.get("teacher_term")
    if not term:
        return None
    loss = args.distillation_loss if term["method"] == "kd" else term["method"]
    return loss + (" + logit standardization" if term["logit_standardization"] else "")


def write_comparison(
    setup: ComparisonSetup,
    args: DistillationTrainingArguments,
    options: ComparisonArguments,
    teacher_settings: dict[str, Any] | None,
    processes: int,
    results: ComparisonResults,
) -> dict[str, Any]:
    """Benchmark the models, draw the plots and write report.json / report.md into `args.output_dir`; print the
    summary and return the report."""
    out, teacher, runs = args.output_dir, results.teacher, results.runs
    batch = options.benchmark_batch_size
    cost = {"teacher": benchmark_model(teacher, setup.make_inputs, batch).to_dict()}
    for role in STUDENT_ROLES:
        cost[role] = benchmark_model(runs[role][0]["model"], setup.make_inputs, batch).to_dict()
    models = {"teacher": model_entry(setup.teacher_name, [results.teacher_metrics], cost["teacher"])}
    for role in STUDENT_ROLES:
        models[role] = model_entry(setup.student_name, runs[role], cost[role])
    temperatures = list(options.entropy_temperatures)
    entropy = soft_label_entropy(results.teacher_logits, temperatures)
    # none for a given teacher
    histories = {"teacher": [results.teacher_history]} if results.teacher_history else {}
    histories.update({role: [run["history"] for run in runs[role]] for role in runs})
    plots = {
        "learning_curves.png": lambda p: plot_learning_curves(histories, p),
        "confusion_matrices.png": lambda p: plot_confusion_matrices(
            {r: np.asarray(m["confusion_matrix"]) for r, m in models.items()},
            setup.class_names,
            p,
            {r: len(m["accuracies"]) for r, m in models.items()},
        ),
        "per_class_error.png": lambda p: plot_per_class_error(
            {r: m["per_class_error"] for r, m in models.items()}, setup.class_names, p
        ),
        "temperature_entropy.png": lambda p: plot_temperature_effect(
            results.teacher_logits, temperatures, p, setup.class_names
        ),
    }
    for filename, draw in plots.items():
        draw(os.path.join(out, filename))
    # The teacher's budget as recorded when it was trained, not this run's arguments: a reused or given teacher
    # may have been trained for other epochs. Left out when unknown.
    recorded = teacher_settings or {}
    teacher_budget = {"teacher_epochs": recorded.get("teacher_epochs"), "teacher_max_steps": recorded.get("max_steps")}
    distillation = {
        "alpha": args.alpha,
        "temperature": args.temperature,
        "loss": _teacher_loss(args, results.settings[0]["method"]),
        "epochs": args.num_train_epochs,
        "method": results.settings[0]["method"]["name"],
        "student_max_steps": results.settings[0]["max_steps"],
        **{key: value for key, value in teacher_budget.items() if value is not None},
        "learning_rate": args.learning_rate,
        "batch_size": args.per_device_train_batch_size,
        "processes": processes,
        "train_examples": len(setup.train_dataset),
        "eval_examples": len(setup.eval_dataset),
        "seeds": list(options.seeds),
    }
    if options.labelled_fraction is not None:
        distillation["labelled_fraction"] = options.labelled_fraction
    teacher_entry = {
        "name": setup.teacher_name,
        "origin": setup.teacher_origin,
        "hub_id": setup.teacher_hub_id,
        "settings": teacher_settings,
        # trained by the comparison on the training set, or as the recipe knows it
        "trained_on_train_set": True if results.teacher_history else setup.teacher_trained_on_train_set,
    }
    report = build_report(
        setup.task,
        setup.dataset_name,
        setup.class_names,
        distillation,
        models,
        device_description(next(teacher.parameters()).device),
        ablation=results.ablation or None,
        settings=results.settings,
        temperature_entropy={
            "temperatures": temperatures,
            "entropy": entropy.tolist(),
            "max_entropy": float(np.log(len(setup.class_names))),
        },
        method=results.settings[0]["method"],
        plots=list(plots),
        timings=results.timings,
        notes=setup.notes,
        teacher=teacher_entry,
        **({"generations": results.generations} if results.generations else {}),
    )
    write_report(report, out)
    print(format_summary(report, out))
    return report
