"""The vision recipes end to end on a few steps with tiny timm models (offline), and their bad-input errors."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation import comparison
from hf_distill.evaluation.arguments import ComparisonArguments
from hf_distill.evaluation.settings import training_labels
from hf_distill.evaluation.teacher_settings import SETTINGS_NAME, load_teacher_settings
from hf_distill.hub import card_from_output_dir
from hf_distill.recipes.args import config_to_argv, parse_recipe_args
from hf_distill.recipes.timm_models import create_image_model, load_image_model, save_image_model
from hf_distill.recipes.vision import (
    ImageDataArguments,
    ImageModelArguments,
    build_vision_setup,
)
from tests.test_vision_report import MODEL_KEYS

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
# Digits, 40 training / 30 eval images, one epoch, two seeds: every stage of the pipeline, in seconds.
TINY = {
    "dataset": "digits",
    "max_train_samples": 40,
    "max_eval_samples": 30,
    "teacher_model": "test_resnet",
    "student_model": "test_resnet",
    "cifar_stem": False,
    "horizontal_flip": False,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "learning_rate": 1e-2,
    "eval_strategy": "epoch",
    "logging_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "dataloader_pin_memory": False,
    "use_cpu": True,
    "seeds": [0, 1],
    "entropy_temperatures": [1, 4],
    "benchmark_batch_size": 4,
    "alpha": 0.9,
    "temperature": 4.0,
}
PLOTS = ("learning_curves.png", "confusion_matrices.png", "per_class_error.png", "temperature_entropy.png")


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def argv(output_dir, **overrides):
    return config_to_argv({**TINY, "output_dir": str(output_dir), **overrides})


def check_report(output_dir, seeds=2):
    report = json.loads((Path(output_dir) / "report.json").read_text())
    assert report["task"] == "image-classification" and report["num_classes"] == 10
    assert report["distillation"]["seeds"] == list(range(seeds))
    assert list(report["models"]) == ["teacher", "student_scratch", "student_distilled"]
    for role, entry in report["models"].items():
        assert MODEL_KEYS <= set(entry), role
        assert len(entry["accuracies"]) == (1 if role == "teacher" else seeds)
        assert 0.0 <= entry["accuracy"] <= 1.0 and entry["parameters"] > 0 and entry["latency_ms"] > 0
        assert sum(map(sum, entry["confusion_matrix"])) == 30 * len(entry["accuracies"])
    assert report["models"]["teacher"]["agreement"] == 1.0
    same = report["settings"][0]  # the models' students are the same-data setting's
    assert same["setting"] == "same_data" and same["eval_examples"] == 30
    assert same["student_scratch_accuracies"] == report["models"]["student_scratch"]["accuracies"]
    assert same["student_distilled_accuracies"] == report["models"]["student_distilled"]["accuracies"]
    markdown = (Path(output_dir) / "report.md").read_text()
    assert "| Distilled student |" in markdown and "## Per-class error (%)" in markdown
    for plot in PLOTS:
        assert (Path(output_dir) / plot).read_bytes()[:4] == b"\x89PNG"
    return report


def record_student_runs(monkeypatch):
    """Record each training run of the comparison: (setting folder, role, examples, labelled examples, max_steps,
    steps trained)."""
    calls, train = [], comparison.train

    def recording_train(model, args, train_dataset, eval_dataset, teacher=None, data_collator=None, **kwargs):
        labels = training_labels(train_dataset)
        model, history = train(model, args, train_dataset, eval_dataset, teacher, data_collator, **kwargs)
        role = os.path.basename(args.output_dir).split("-seed")[0]
        setting = os.path.basename(os.path.dirname(args.output_dir))
        calls.append((setting, role, len(labels), int((labels != -100).sum()), args.max_steps, history[-1]["step"]))
        return model, history

    monkeypatch.setattr(comparison, "train", recording_train)
    return calls


def check_settings(report, calls, output_dir):
    """Same data and transfer set: each student run's data, labels and optimizer steps, and the report's statistics
    recomputed from its per-seed accuracies."""
    students = [call for call in calls if call[0] in ("students", "transfer_set")]
    assert {(setting, role, n, labelled) for setting, role, n, labelled, *_ in students} == {
        ("students", "student_scratch", 40, 40),
        ("students", "student_distilled", 40, 40),
        ("transfer_set", "student_scratch", 10, 10),  # the labelled quarter alone
        ("transfer_set", "student_distilled", 40, 10),  # the same quarter labelled, the rest at -100
    }
    assert len(students) == 8
    assert all(max_steps == steps == 3 for *_, max_steps, steps in students)  # ceil(40 / 16) steps, one epoch
    same, transfer = report["settings"]
    assert (same["setting"], same["labelled_examples"], same["unlabelled_examples"]) == ("same_data", 40, 0)
    assert (transfer["setting"], transfer["labelled_examples"], transfer["unlabelled_examples"]) == (
        "transfer_set",
        10,
        30,
    )
    for item in (same, transfer):
        assert item["max_steps"] == 3 and item["eval_examples"] == 30 and item["seeds"] == [0, 1]
        differences = np.subtract(item["student_distilled_accuracies"], item["student_scratch_accuracies"])
        mean, sd = differences.mean(), differences.std(ddof=1)
        half = stats.t.ppf(0.975, 1) * sd / np.sqrt(2)
        assert item["difference_mean"] == pytest.approx(mean)
        assert item["difference_ci95"] == pytest.approx([mean - half, mean + half])
        assert item["significant"] == bool(mean - half > 0 or mean + half < 0)
    saved = json.loads((output_dir / "report.json").read_text())
    assert saved["settings"] == json.loads(json.dumps(report["settings"]))
    assert saved["teacher"]["trained_on_train_set"] is True and saved["distillation"]["labelled_fraction"] == 0.25
    markdown = (output_dir / "report.md").read_text()
    assert "## When distillation pays" in markdown and "trained before the students, on all 40" in markdown


def test_cifar_recipe_end_to_end_with_both_settings_ablation_and_teacher_reuse(tmp_path, monkeypatch):
    recipe = load_recipe("cifar_resnet")
    out = tmp_path / "run"
    calls = record_student_runs(monkeypatch)
    recipe.main(argv(out, labelled_fraction=0.25, ablation=["temperature=1", "max_train_samples=20,alpha=0.5"]))
    report = check_report(out)
    check_settings(report, calls, out)
    settings = [item["setting"] for item in report["ablation"]]
    assert settings == ["temperature=1", "max_train_samples=20,alpha=0.5"]
    assert report["ablation"][0]["student_scratch_reused"] and not report["ablation"][1]["student_scratch_reused"]
    assert len(report["ablation"][1]["student_distilled_accuracies"]) == 2
    assert [item["train_examples"] for item in report["ablation"]] == [40, 20]
    assert [item["max_steps"] for item in report["ablation"]] == [3, 3]  # as many steps on 20 labelled images
    teachers = [(n, max_steps, steps) for _, role, n, _, max_steps, steps in calls if role == "teacher"]
    assert teachers == [(40, -1, 3), (20, 3, 3)]  # the ablation's teacher: as many steps as the first one
    assert report["ablation"][0]["teacher"] == report["models"]["teacher"]["accuracy"]
    teacher = load_image_model(str(out / "teacher"), num_classes=10)
    assert teacher.hf_distill_config["dataset"] == "digits"
    assert load_image_model(str(out / "student_distilled" / "seed-1"), num_classes=10) is not None
    top = load_image_model(str(out), num_classes=10).eval()  # the first seed's student, ready for the Hub
    first = load_image_model(str(out / "student_distilled" / "seed-0"), num_classes=10).eval()
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(top(pixels), first(pixels))
    assert not (out / "students").exists()  # empty per-run folders are cleaned up
    # what the teacher was trained with is saved beside it, and reported
    recorded = load_teacher_settings(str(out / "teacher"))
    assert recorded["teacher_model"] == "test_resnet" and recorded["dataset"] == "digits"
    assert recorded["teacher_epochs"] == 1 and recorded["max_train_samples"] == 40
    assert report["teacher"]["settings"] == recorded and report["distillation"]["teacher_epochs"] == 1
    # a second run in the same folder reuses the saved teacher, unless it is another architecture
    with pytest.raises(ValueError, match=r"teacher_model: 'test_resnet' \(saved\) vs 'resnet10t' \(this run\)"):
        recipe.main(argv(out, teacher_model="resnet10t"))


def _vision_args(output_dir, **overrides):
    types = (ImageModelArguments, ImageDataArguments, ComparisonArguments, DistillationTrainingArguments)
    return parse_recipe_args(types, argv(output_dir, **overrides))


def test_saved_teacher_is_reused_only_with_the_settings_it_was_trained_with(tmp_path):
    recipe = load_recipe("cifar_resnet")
    out = tmp_path / "run"
    recipe.main(argv(out, seeds=[0], teacher_epochs=1))
    teacher_dir, report_file = out / "teacher", out / "report.json"
    saved = {path: path.read_bytes() for path in (teacher_dir / "model.safetensors", report_file)}
    recorded = load_teacher_settings(str(teacher_dir))
    assert (recorded["teacher_epochs"], recorded["seed"], recorded["global_batch_size"]) == (1, 42, 16)

    # the same settings: the saved teacher is reused, with the settings it was trained with
    model_args, data_args, comparison_args, training_args = _vision_args(out, seeds=[0], teacher_epochs=1)
    setup = build_vision_setup(model_args, data_args, training_args, comparison_args)
    assert setup.teacher is not None and setup.teacher_settings == recorded
    reused = load_image_model(str(teacher_dir), num_classes=10).eval()
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(setup.teacher.eval()(pixels), reused(pixels))

    # other settings: the run stops before any training, naming each difference and the ways out
    for overrides, differences in (
        ({"teacher_epochs": 2}, [r"teacher_epochs: 1\.0 \(saved\) vs 2\.0 \(this run\)"]),
        (
            {"seed": 1, "max_train_samples": 30, "teacher_model_kwargs": '{"drop_rate": 0.1}'},
            [
                r"seed: 42 \(saved\) vs 1 \(this run\)",
                r"max_train_samples: 40 \(saved\) vs 30 \(this run\)",
                r"teacher_model_kwargs: \{\} \(saved\) vs \{'drop_rate': 0\.1\} \(this run\)",
            ],
        ),
        ({"image_size": 16, "random_affine": 0.5}, [r"image_size: 32 \(saved\) vs 16", r"random_affine: 0\.0"]),
    ):
        with pytest.raises(ValueError) as error:
            recipe.main(argv(out, seeds=[0], **overrides))
        message = str(error.value)
        for difference in differences:
            assert re.search(difference, message), (difference, message)
        assert "Delete that folder" in message and "--output_dir" in message
        assert f"--teacher_name_or_path {teacher_dir}" in message
        assert "dataset" not in message.split(". Delete")[0]  # only what differs is listed
    assert {path: path.read_bytes() for path in saved} == saved  # nothing was trained or written

    # reused knowingly: the report and the card state the teacher's recorded epochs, not this run's --teacher_epochs
    other = tmp_path / "other"
    report = recipe.main(argv(other, seeds=[0], teacher_epochs=5, teacher_name_or_path=str(teacher_dir)))
    assert report["distillation"]["teacher_epochs"] == 1
    assert report["teacher"]["settings"] == recorded and report["teacher"]["hub_id"] is None
    assert "teacher_epochs: 1.0 (teacher) vs 5.0 (this run)." in report["notes"][0]
    assert "trained with teacher_model=test_resnet" in (other / "report.md").read_text()
    card = card_from_output_dir(other)
    assert "| Teacher epochs | 1 |" in card.text and "| Teacher epochs | 5 |" not in card.text
    assert "distilled from `test_resnet` (trained locally by this recipe)" in card.text
    assert "huggingface.co/test_resnet" not in card.text and card.data.base_model is None

    # a teacher saved without its settings cannot be checked, so it is not reused silently either
    (teacher_dir / SETTINGS_NAME).unlink()
    with pytest.raises(ValueError, match=r"saved without its settings.*--teacher_name_or_path"):
        recipe.main(argv(out, seeds=[0], teacher_epochs=1))


def test_bad_inputs_fail_before_training(tmp_path):
    recipe = load_recipe("cifar_resnet")
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="Unknown timm model 'resnet51'.*resnet50"):
        recipe.main(argv(out, student_model="resnet51"))
    with pytest.raises(ValueError, match="does not exist"):
        recipe.main(argv(out, dataset=str(tmp_path / "no_such_dataset")))
    three_classes = create_image_model("test_resnet", 3)
    save_image_model(three_classes, str(tmp_path / "teacher3"))
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 10"):
        recipe.main(argv(out, teacher_name_or_path=str(tmp_path / "teacher3")))
    with pytest.raises(ValueError, match="unknown key 'temprature'"):
        recipe.main(argv(out, ablation=["temprature=2"]))
    with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\), got 1.5"):
        recipe.main(argv(out, labelled_fraction=1.5))
    with pytest.raises(ValueError, match="seeds must differ"):
        recipe.main(argv(out, seeds=[0, 0]))
    with pytest.raises(ValueError, match="cpu_threads must be at least 1"):
        recipe.main(argv(out, cpu_threads=0))
    assert not out.exists()


def test_vit_recipe_cross_architecture_from_a_config_file(tmp_path):
    config = {**TINY, "output_dir": str(tmp_path / "vit"), "seeds": [0]}
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(config))
    command = [
        sys.executable,
        "recipes/vit_distill.py",
        str(config_file),
        "--pair",
        "cnn_vit",
        "--student_model",
        "test_vit",
        "--student_model_kwargs",
        '{"depth": 1}',
        "--cifar_stem",
        "true",
        "--patch_size",
        "8",
    ]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = check_report(tmp_path / "vit", seeds=1)
    assert report["models"]["teacher"]["model_name"] == "test_resnet (CIFAR stem)"
    assert report["models"]["student_distilled"]["model_name"] == "test_vit (depth=1, 8×8 patches)"
    assert "Distillation on digits" in result.stdout
