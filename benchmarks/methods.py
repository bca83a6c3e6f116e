"""Every distillation method on the default demo's data and models: accuracy, the paired difference against the
student from scratch, and the cost of a training step against plain training, measured in one run.

Run from the repository root (no network). The teacher is trained first and reused by later runs with the same
--output_dir and teacher settings; on this project's 2-core CPU machine, shared with other jobs, the teacher took
7 minutes and the 30 student runs of the default command 15 minutes (see the README). Options shorten it:

    python benchmarks/methods.py                                   # 9 methods, 3 seeds, the demo's budget
    python benchmarks/methods.py --methods kd dkd at --seeds 0 1 2 3 4
    python benchmarks/methods.py --max_steps 20                    # a quick look

The data, the models and the training arguments are those of `recipes/configs/digits_demo.json` (sklearn digits,
a resnet18 teacher, timm's test_resnet student, 2 epochs of the whole labelled training set for every student),
except that students are scored once at the end; `--config` takes another config of the vision recipe. Per seed the
script trains one student from scratch (labels only) and one student per method, all with the same seed, data and
number of optimizer steps (`Comparison.run_student`, as the recipe does): the difference distilled − scratch is
paired by seed, with its 95% t-interval (`statistics.paired_entry`). The runs of a seed follow each other in an
order rotated from seed to seed, so that the load of a shared machine falls on every method alike. PyTorch uses one
CPU thread (`--cpu_threads`). A step's time is from the Trainer's `on_step_begin` to its `on_step_end` (forward
passes of student and teacher, backward, optimizer step); each run gives its median, each method the median of its
runs, and the ratio divides it by the students from scratch's.

Methods, weights and module paths: `hf_distill/evaluation/methods.py`. The table is printed and written with every
run's numbers to `<output_dir>/methods.json`.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hf_distill import DistillationTrainingArguments  # noqa: E402
from hf_distill.evaluation.arguments import ComparisonArguments  # noqa: E402
from hf_distill.evaluation.comparison import Comparison, predict_logits  # noqa: E402
from hf_distill.evaluation.methods import METHODS, check_methods, parse_method  # noqa: E402
from hf_distill.evaluation.statistics import paired_entry  # noqa: E402
from hf_distill.evaluation.tables import interval, pct, points  # noqa: E402
from hf_distill.evaluation.teacher_settings import save_teacher_settings  # noqa: E402
from hf_distill.evaluation.training import budget_steps, use_cpu_threads  # noqa: E402
from hf_distill.recipes.args import parse_recipe_args  # noqa: E402
from hf_distill.recipes.vision import ImageDataArguments, ImageModelArguments, build_vision_setup  # noqa: E402

SCRATCH = "scratch"


class StepTimer(TrainerCallback):
    """Seconds of each optimizer step, one list per training run in the order they ran."""

    def __init__(self) -> None:
        self.runs: list[list[float]] = []
        self._start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs.append([])

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.runs[-1].append(time.perf_counter() - self._start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "digits_demo.json"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="Methods, e.g. kd dkd+at.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Seeds (at least 2 for a CI).")
    parser.add_argument("--max_steps", type=int, default=None, help="Optimizer steps per student (default: config).")
    parser.add_argument("--output_dir", default="out/methods_benchmark")
    parser.add_argument("--cpu_threads", type=int, default=1, help="torch.set_num_threads; 0 keeps the default.")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    options = parse_args(argv)
    overrides = ["--output_dir", options.output_dir, "--seeds", *map(str, options.seeds), "--eval_strategy", "no"]
    model_args, data_args, comparison_args, training_args = parse_recipe_args(
        (ImageModelArguments, ImageDataArguments, ComparisonArguments, DistillationTrainingArguments),
        [options.config, *overrides, "--disable_tqdm", "true", "--logging_strategy", "no"],
    )
    comparison_args.labelled_fraction, comparison_args.ablation = None, []
    use_cpu_threads(options.cpu_threads or None)
    methods = [parse_method(name) for name in options.methods]  # an unknown method fails here, before training

    # ---- Data, teacher and student: those of the demo, checked before training ----
    setup = build_vision_setup(model_args, data_args, training_args, comparison_args)
    comparison = Comparison(setup, training_args, comparison_args)
    teacher = setup.teacher if setup.teacher is not None else setup.make_teacher
    check_methods(methods, training_args, setup.make_student, teacher)
    if setup.teacher is None:
        start = time.perf_counter()
        teacher, _ = comparison.train_teacher(setup.train_dataset)
        setup.save_model(teacher, os.path.join(options.output_dir, "teacher"))
        save_teacher_settings(os.path.join(options.output_dir, "teacher"), comparison.teacher_settings)
        print(f"teacher trained in {time.perf_counter() - start:.0f} s")
    logits, labels = predict_logits(teacher, training_args, setup.eval_dataset)
    teacher_predictions = logits.argmax(-1)
    teacher_accuracy = float((teacher_predictions == labels).mean())

    # ---- Students: per seed, scratch and every method, interleaved in a rotated order ----
    timer = StepTimer()
    comparison.callbacks.append(timer)
    steps = options.max_steps or budget_steps(training_args, len(setup.train_dataset))
    runs = {name: [] for name in [SCRATCH, *(m.name for m in methods)]}
    start = time.perf_counter()
    for index, seed in enumerate(options.seeds):
        order = [None, *methods]
        order = order[index % len(order) :] + order[: index % len(order)]
        for method in order:
            role, tag = ("student_scratch", SCRATCH) if method is None else ("student_distilled", method.name)
            run = comparison.run_student(
                role,
                seed,
                None if method is None else teacher,
                setup.train_dataset,
                f"methods/{tag}",
                {"max_steps": steps},
                teacher_predictions,
                method,
            )
            runs[tag].append({"seed": seed, "accuracy": run["accuracy"], "step_s": statistics.median(timer.runs[-1])})
            print(f"seed {seed} {tag}: accuracy {run['accuracy']:.4f}, median step {runs[tag][-1]['step_s']:.4f} s")
    elapsed = time.perf_counter() - start

    # ---- Table ----
    scratch_step = statistics.median(run["step_s"] for run in runs[SCRATCH])
    scratch = sorted(runs[SCRATCH], key=lambda run: run["seed"])
    rows = []
    for name, method_runs in runs.items():
        ordered = sorted(method_runs, key=lambda run: run["seed"])
        row = {"method": name, "runs": ordered, "step_s": statistics.median(r["step_s"] for r in ordered)}
        row["step_ratio"] = row["step_s"] / scratch_step
        # scratch against itself: its own mean and std, a difference of 0 that the table does not show
        row.update(paired_entry({"student_scratch": scratch, "student_distilled": ordered}))
        rows.append(row)
    n_eval = len(labels)
    print(
        f"\n{setup.teacher_name} → {setup.student_name} on {setup.dataset_name}: {len(setup.train_dataset)} training "
        f"images, {steps} optimizer steps per student, {len(options.seeds)} seeds {options.seeds}, accuracy on "
        f"{n_eval} eval images (one image = {100 / n_eval:.2f} points); teacher {100 * teacher_accuracy:.2f} %; "
        f"students trained in {elapsed / 60:.1f} min\n"
    )
    print("| Method | Accuracy (%) | Distilled − scratch (points) [95% CI] | Verdict | Step time (ms) | × scratch |")
    print("|---|---:|---:|---|---:|---:|")
    for row in rows:
        accuracy = pct(row["student_distilled"], row["student_distilled_std"])
        if row["method"] == SCRATCH:
            difference, verdict = "–", "–"
        else:
            difference = f"{points(row['difference_mean'])} {interval(row['difference_ci95'])}"
            verdict = row["verdict"]
        print(
            f"| {row['method']} | {accuracy} | {difference} | {verdict} | {1000 * row['step_s']:.1f} "
            f"| {row['step_ratio']:.2f} |"
        )
    os.makedirs(options.output_dir, exist_ok=True)
    with open(os.path.join(options.output_dir, "methods.json"), "w") as file:
        json.dump({"teacher_accuracy": teacher_accuracy, "max_steps": steps, "rows": rows}, file, indent=2)
    return rows


if __name__ == "__main__":
    main()
