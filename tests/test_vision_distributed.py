"""The vision recipe under `accelerate launch` with two CPU processes (gloo): one report, clean exits."""

import json
import os
import subprocess

from test_vision_recipes import ENV, PLOTS, ROOT, TINY, argv, check_report

from tests.test_distributed import LAUNCH_TWO


def test_cifar_recipe_with_two_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [*LAUNCH_TWO, "recipes/cifar_resnet.py", *argv(out, labelled_fraction=0.25, ablation=["alpha=0.5"])]
    result = subprocess.run(
        command, cwd=ROOT, env={**ENV, "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for fatal in ("Traceback", "Abort", "Segmentation fault", "core dumped"):
        assert fatal not in result.stderr, result.stderr[-3000:]
    report = check_report(out)
    # the eval set is gathered over both processes without duplicates: every eval image counted once per seed
    assert sum(map(sum, report["models"]["student_scratch"]["confusion_matrix"])) == 2 * TINY["max_eval_samples"]
    assert report["ablation"][0]["setting"] == "alpha=0.5"
    # both settings, the same budget as one process with the same global batch: ceil(40 / (2 x 16)) = 2 steps
    same, transfer = report["settings"]
    assert (transfer["labelled_examples"], transfer["unlabelled_examples"]) == (10, 30)
    assert same["max_steps"] == transfer["max_steps"] == 2 and same["eval_examples"] == TINY["max_eval_samples"]
    assert result.stdout.count("Distillation on digits") == 1  # only the main process reports
    assert (out / "teacher" / "config.json").exists()
    assert sorted(os.listdir(out / "student_distilled")) == ["seed-0", "seed-1"]
    assert all((out / plot).exists() for plot in PLOTS)
    assert json.loads((out / "report.json").read_text())["device"].startswith("cpu")
