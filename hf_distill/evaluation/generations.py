"""Born-again generations (Furlanello et al., ICML 2018): each generation's distilled student teaches the next.

Generation 1 is the same-data setting's distilled student of the teacher. Generation g + 1 is a fresh student
distilled from generation g's student of the same seed: same seed, same data (the whole labelled training set),
same method and the same budget in optimizer steps. Every generation is compared, seed by seed, with the same-data
setting's students from scratch (`statistics.paired_entry`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .statistics import paired_entry

ROLE = "student_distilled"


def generation_entry(
    generation: int,
    scratch: list[dict[str, Any]],
    students: list[dict[str, Any]],
    max_steps: int,
    teacher_accuracy: float,
    method: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's entry of one generation: its teacher, budget, method, per-seed accuracies (`student_distilled`
    is the generation's student) and the paired difference with the students from scratch."""
    return {
        "generation": generation,
        "teacher": "teacher" if generation == 1 else f"generation {generation - 1}",
        "teacher_accuracy": teacher_accuracy if generation == 1 else None,
        "max_steps": max_steps,
        "method": method,
        **paired_entry({"student_scratch": scratch, ROLE: students}),
    }


def run_generations(
    comparison: Any,
    runs: dict[str, list[dict[str, Any]]],
    teacher_predictions: np.ndarray,
    max_steps: int,
    teacher_accuracy: float,
    method: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Generations 2 to `comparison.options.generations` after the same-data setting's `runs`, trained with
    `comparison.run_student` in `<output_dir>/generations/generation-<g>/`; one `generation_entry` per generation,
    the first included. Empty with a single generation, so that the report has no such section.

    Agreement is still measured against the teacher's `teacher_predictions`.
    """
    count = comparison.options.generations
    if count < 2:
        return []
    scratch, previous = runs["student_scratch"], runs[ROLE]
    dataset = comparison.setup.train_dataset
    overrides: dict[str, Any] = {"max_steps": max_steps}
    if not comparison.args.load_best_model_at_end:  # scored once at the end, as the transfer set's students
        overrides["eval_strategy"] = "no"
    entries = [generation_entry(1, scratch, previous, max_steps, teacher_accuracy, method)]
    for generation in range(2, count + 1):
        tag = f"generations/generation-{generation}"
        previous = [
            comparison.run_student(ROLE, run["seed"], run["model"], dataset, tag, overrides, teacher_predictions)
            for run in previous
        ]
        entries.append(generation_entry(generation, scratch, previous, max_steps, teacher_accuracy, method))
    return entries
