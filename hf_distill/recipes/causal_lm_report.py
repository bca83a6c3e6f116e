"""The causal-LM demo's report: mean ± std per student over seeds, paired differences against the student trained on
the data alone (95% t-intervals), and what they say; written as report.json and report.md and printed."""

import json
from pathlib import Path
from typing import Any

from ..evaluation.statistics import paired_difference

BASELINE = "data only"


def _cell(entry: dict[str, float | None], digits: int) -> str:
    return f"{entry['mean']:.{digits}f}" + (f" ± {entry['std']:.{digits}f}" if entry["std"] is not None else "")


def _interval(difference: dict[str, Any], digits: int) -> str:
    interval = difference["ci95"]
    bounds = f" [{interval[0]:+.{digits}f}, {interval[1]:+.{digits}f}]" if interval is not None else ""
    return f"{difference['mean']:+.{digits}f}{bounds}"


def paired_differences(runs: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Per distilled role: the paired difference of accuracy (distilled − data only) and of perplexity (data only −
    distilled, so that a positive value is a lower perplexity, better), seed by seed."""
    baseline = sorted(runs[BASELINE], key=lambda run: run["seed"])
    differences = {}
    for role, entries in runs.items():
        if role == BASELINE:
            continue
        entries = sorted(entries, key=lambda run: run["seed"])
        differences[role] = {
            "accuracy": paired_difference([r["accuracy"] for r in baseline], [r["accuracy"] for r in entries]),
            "perplexity_reduction": paired_difference(
                [-r["perplexity"] for r in baseline], [-r["perplexity"] for r in entries]
            ),
        }
    return differences


def _findings(differences: dict[str, dict[str, Any]]) -> list[str]:
    """Plain sentences: where distillation helped, where it did not (by the 95% intervals)."""
    lines = []
    for role, difference in differences.items():
        for metric, label in (("accuracy", "answer accuracy"), ("perplexity_reduction", "held-out perplexity")):
            entry = difference[metric]
            if entry["significant"] and entry["mean"] > 0:
                lines.append(f"{role} improves {label} over the data-only student (95% interval excludes 0).")
            elif entry["significant"]:
                lines.append(f"{role} makes {label} worse than the data-only student (95% interval excludes 0).")
            else:
                lines.append(f"{role} makes no significant difference to {label} (95% interval includes 0).")
    return lines


def demo_table(report: dict[str, Any]) -> str:
    """The markdown table of the demo: the teacher, then each student role, mean ± std over seeds."""
    rows = [
        "| model | parameters | held-out perplexity | answer accuracy | generation tokens/s | Δ accuracy vs data only "
        "[95% CI] | Δ perplexity reduction [95% CI] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    teacher = report["teacher"]
    rows.append(
        f"| teacher | {teacher['parameters']:,} | {teacher['perplexity']:.3f} | {teacher['accuracy']:.3f} | "
        f"{teacher['generation_tokens_per_s']:.0f} | | |"
    )
    for role, summary in report["summary"].items():
        difference = report["differences"].get(role)
        accuracy = _interval(difference["accuracy"], 3) if difference else ""
        perplexity = _interval(difference["perplexity_reduction"], 3) if difference else ""
        rows.append(
            f"| student, {role} | {summary['parameters']['mean']:,.0f} | {_cell(summary['perplexity'], 3)} | "
            f"{_cell(summary['accuracy'], 3)} | {_cell(summary['generation_tokens_per_s'], 0)} | {accuracy} | "
            f"{perplexity} |"
        )
    return "\n".join(rows)


def write_demo_report(report: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Add the paired differences and findings, write report.json and report.md into `output_dir`, print the table."""
    report["differences"] = paired_differences(report["runs"])
    report["findings"] = _findings(report["differences"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    seeds = [run["seed"] for run in report["runs"][BASELINE]]
    text = "\n".join(
        [
            "# Causal-LM distillation demo",
            "",
            f"Task: {report['task']}; {report['train_examples']} training and {report['test_examples']} held-out "
            f"additions. Teacher trained for {report['teacher_steps']} optimizer steps; each student for "
            f"{report['student_steps']}, seeds {seeds} (mean ± sample std). Settings: {report['settings']}.",
            "",
            demo_table(report),
            "",
            "Perplexity is over the answer tokens and the end of sequence under teacher forcing; accuracy is the "
            "exact match of the greedy answer; Δ are paired per seed (distilled − data only; for perplexity, data "
            "only − distilled), with Student's t 95% intervals.",
            "",
            *(f"- {line}" for line in report["findings"]),
            "",
            f"Total time: {report['total_seconds']:.0f} s wall, {report['total_cpu_seconds']:.0f} s CPU of this "
            "process (generation tokens/s and wall time vary with the machine's other load).",
        ]
    )
    (output_dir / "report.md").write_text(text + "\n")
    print(text)
    return report
