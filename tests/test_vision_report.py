"""Benchmarks, comparison reports and plots: hand-checked numbers, schema keys, files written."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation.benchmark import benchmark_model, image_inputs, size_on_disk_mb, time_forward
from hf_distill.evaluation.generations import generation_entry
from hf_distill.evaluation.methods import parse_method
from hf_distill.evaluation.plots import (
    plot_confusion_matrices,
    plot_learning_curves,
    plot_per_class_error,
    plot_temperature_effect,
    soft_label_entropy,
    soft_labels,
)
from hf_distill.evaluation.report import (
    MODEL_ROLES,
    build_report,
    confusion_matrix,
    format_summary,
    model_entry,
    per_class_error,
    prediction_metrics,
    write_report,
)
from hf_distill.evaluation.settings import SAME_DATA, TRANSFER_SET, setting_entry
from hf_distill.modeling import count_parameters

MODEL_KEYS = {
    "model_name",
    "parameters",
    "size_mb",
    "accuracy",
    "accuracy_std",
    "accuracies",
    "agreement",
    "latency_ms",
    "throughput_per_s",
    "per_class_error",
    "confusion_matrix",
}


def test_confusion_matrix_and_per_class_error_by_hand():
    labels = [0, 0, 1, 1, 1, 2]
    predictions = [0, 1, 1, 1, 0, 2]
    matrix = confusion_matrix(predictions, labels, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert per_class_error(matrix) == [0.5, pytest.approx(1 / 3), 0.0, None]
    metrics = prediction_metrics(predictions, labels, 4, reference_predictions=[0, 1, 1, 0, 0, 0])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["agreement"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="shape"):
        prediction_metrics([0, 1], [0], 2)


def test_model_entry_aggregates_seeds():
    runs = [
        prediction_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2, [0, 1, 1, 1]),
        prediction_metrics([0, 1, 0, 0], [0, 1, 0, 0], 2, [0, 1, 1, 1]),
    ]
    entry = model_entry("tiny", runs, {"parameters": 10, "size_mb": 0.1, "latency_ms": 1.0, "throughput_per_s": 5.0})
    assert set(entry) == MODEL_KEYS
    assert entry["accuracies"] == [0.75, 1.0]
    assert entry["accuracy"] == pytest.approx(0.875)
    assert entry["accuracy_std"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert entry["agreement"] == pytest.approx((0.75 + 0.5) / 2)
    assert entry["confusion_matrix"] == [[5, 1], [0, 2]]
    assert entry["per_class_error"] == [pytest.approx(1 / 6), 0.0]
    assert model_entry("t", runs[:1])["accuracy_std"] is None


def _report(ablation=None, **extra):
    run = prediction_metrics([0, 1, 2, 2], [0, 1, 2, 1], 3, [0, 1, 2, 1])
    models = {
        role: model_entry(
            role, [run, run], {"parameters": 100, "size_mb": 0.5, "latency_ms": 2.0, "throughput_per_s": 50.0}
        )
        for role in MODEL_ROLES
    }
    return build_report(
        "image-classification",
        "tiny",
        ["a", "b", "c"],
        {"alpha": 0.9, "temperature": 4.0},
        models,
        "cpu (1 threads)",
        ablation=ablation,
        plots=["x.png"],
        **extra,
    )


def test_report_files_follow_the_schema(tmp_path):
    ablation = [
        {
            "setting": "temperature=1",
            "student_scratch": 0.8,
            "student_distilled": 0.7,
            "student_scratch_std": 0.01,
            "student_distilled_std": 0.02,
        }
    ]
    json_path, md_path = write_report(_report(ablation), str(tmp_path))
    report = json.loads(open(json_path).read())
    required = {"task", "dataset", "num_classes", "class_names", "distillation", "device", "models", "ablation"}
    assert required <= set(report)
    assert list(report["models"]) == list(MODEL_ROLES)
    for entry in report["models"].values():
        assert set(entry) >= MODEL_KEYS
    text = open(md_path).read()
    assert "| Distilled student | student_distilled | 100 | 0.50 | 75.00 ± 0.00 |" in text
    assert "| temperature=1 | – | – | – | – | 80.00 ± 1.00 | 70.00 ± 2.00 | -10.00 | – | – |" in text
    assert "## Per-class error (%)" in text and "![x](x.png)" in text
    summary = format_summary(report)
    assert len(summary.splitlines()) < 25 and "distilled − scratch: +0.00 points" in summary
    with pytest.raises(ValueError, match="missing"):
        build_report("t", "d", ["a"], {}, {"teacher": {}}, "cpu")


def test_benchmark_counts_sizes_and_times():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    model.train()
    n = 3 * 4 * 9 + 4 + 4 * 36 * 2 + 2
    assert count_parameters(model) == n
    assert size_on_disk_mb(model) == pytest.approx(4 * n / 1e6, abs=2e-3)  # float32 + a small header
    result = benchmark_model(model, image_inputs(8), batch_size=4, warmup=1, min_time_s=0.01)
    assert result.parameters == n and result.latency_ms > 0 and result.throughput_per_s > 0
    assert result.batch_size == 4 and result.device.startswith("cpu")
    assert model.training  # the mode is restored


def test_timing_runs_the_model_in_inference_mode_on_the_current_threads():
    """torch.utils.benchmark's Timer runs on one thread unless told: the figures must be those of the run's setting."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))
            return x

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert time_forward(Probe(), torch.zeros(1), warmup=2, min_time_s=0.001) > 0
    finally:
        torch.set_num_threads(before)
    assert len(seen) > 2 and set(seen) == {(2, True)}


def test_benchmark_takes_dict_inputs_and_shared_weights():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, input_ids, attention_mask):
            return self.out(self.embed(input_ids) * attention_mask[..., None])

    model = Tied()
    make = lambda n: {"input_ids": torch.zeros(n, 5, dtype=torch.long), "attention_mask": torch.ones(n, 5)}  # noqa: E731
    result = benchmark_model(model, make, batch_size=2, warmup=0, min_time_s=0)
    assert result.parameters == 40 and result.size_mb > 0


def test_soft_label_entropy_grows_with_temperature_to_log_c():
    logits = np.array([[5.0, 1.0, 0.0, -2.0], [0.0, 3.0, 0.5, 0.0]])
    temperatures = [0.5, 1.0, 2.0, 4.0, 8.0, 1000.0]
    entropy = soft_label_entropy(logits, temperatures)
    assert np.all(np.diff(entropy) > 0)
    assert entropy[-1] == pytest.approx(math.log(4), abs=1e-4)
    p = soft_labels(logits, 1.0)[0]
    assert entropy[1] == pytest.approx(np.mean([-(q * np.log(q)).sum() for q in soft_labels(logits, 1.0)]))
    assert p.sum() == pytest.approx(1.0)
    assert soft_label_entropy(np.zeros((3, 4)), [1.0])[0] == pytest.approx(math.log(4))


def test_plots_are_written(tmp_path):
    history = [
        {"loss": 2.0, "hard_loss": 2.0, "epoch": 1.0},
        {"eval_accuracy": 0.5, "epoch": 1.0},
        {"loss": 1.0, "hard_loss": 1.0, "epoch": 2.0},
        {"eval_accuracy": 0.7, "epoch": 2.0},
    ]
    paths = [
        plot_learning_curves({"teacher": [history], "student_scratch": [history, history]}, str(tmp_path / "lc.png")),
        plot_confusion_matrices(
            {"teacher": np.eye(3) * 4, "student_distilled": np.ones((3, 3))}, "abc", str(tmp_path / "cm.png")
        ),
        plot_per_class_error({"teacher": [0.1, None, 0.3]}, "abc", str(tmp_path / "pce.png")),
        plot_temperature_effect(np.random.default_rng(0).normal(size=(20, 3)), [1, 2, 4], str(tmp_path / "t.png")),
    ]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


SETTING_KEYS = {
    "setting",
    "method",
    "labelled_examples",
    "unlabelled_examples",
    "max_steps",
    "student_scratch_accuracies",
    "student_distilled_accuracies",
    "difference_mean",
    "difference_ci95",
    "significant",
}


def _settings():
    def runs(scratch, distilled):
        return {
            "student_scratch": [{"seed": i, "accuracy": a} for i, a in enumerate(scratch)],
            "student_distilled": [{"seed": i, "accuracy": a} for i, a in enumerate(distilled)],
        }

    same = runs([0.96, 0.97, 0.95, 0.96, 0.97], [0.97, 0.96, 0.96, 0.97, 0.96])
    transfer = runs([0.80, 0.82, 0.78, 0.81, 0.79], [0.90, 0.91, 0.89, 0.92, 0.90])
    return [
        setting_entry(SAME_DATA, same, 200, 0, 120, 0.98, 450),
        setting_entry(TRANSFER_SET, transfer, 20, 180, 120, 0.98, 450),
    ]


def test_report_puts_the_two_settings_side_by_side_before_the_ablation(tmp_path):
    ablation = [{"setting": "alpha=0.9", "student_scratch": 0.8, "student_distilled": 0.7}]
    json_path, md_path = write_report(_report(ablation, settings=_settings()), str(tmp_path))
    report = json.loads(open(json_path).read())
    assert [item["setting"] for item in report["settings"]] == ["same_data", "transfer_set"]
    for item in report["settings"]:
        assert SETTING_KEYS <= set(item)
        assert isinstance(item["significant"], bool) and len(item["difference_ci95"]) == 2
        assert len(item["student_scratch_accuracies"]) == len(item["student_distilled_accuracies"]) == 5
    same, transfer = report["settings"]
    assert not same["significant"] and transfer["significant"]
    text = open(md_path).read()
    top = text.index("## When distillation pays")
    assert top < text.index("## Models") < text.index("## Ablation")
    assert "| same data | – | 200 | 0 | 120 | 98.00 | 96.20 ± 0.84 | 96.40 ± 0.55 | +0.20 |" in text
    assert "| no significant difference |" in text and "| significant: distilled better |" in text
    assert "| transfer set | – | 20 | 180 | 120 | 98.00 |" in text
    assert "one example is 0.22 points" in text and "4 degrees of freedom" in text
    assert "| 0 | 96.00 | 97.00 | +1.00 | 80.00 | 90.00 | +10.00 |" in text  # per seed, side by side
    summary = format_summary(report)
    assert "one example = 0.22 points" in summary
    lines = {line.split("  ")[0]: line for line in summary.splitlines()}
    assert lines["same data"].endswith("no significant difference")
    low, high = transfer["difference_ci95"]
    assert f"+{100 * transfer['difference_mean']:.2f} [+{100 * low:.2f}, +{100 * high:.2f}]" in lines["transfer set"]
    assert lines["transfer set"].endswith("significant: distilled better")


def test_report_states_the_method_of_each_row_and_every_generation(tmp_path):
    args = DistillationTrainingArguments(output_dir=str(tmp_path), alpha=0.5, temperature=4.0, report_to="none")
    method = parse_method("dkd+at")
    described = method.describe(dataclasses.replace(args, **method.training_overrides(args)))
    settings = _settings()
    for item in settings:
        item["method"] = described
    runs = {"student_scratch": [{"seed": i, "accuracy": a} for i, a in enumerate([0.96, 0.97, 0.95])]}
    second = [{"seed": i, "accuracy": a} for i, a in enumerate([0.97, 0.98, 0.97])]
    first = [{"seed": i, "accuracy": a} for i, a in enumerate([0.96, 0.98, 0.96])]
    generations = [
        generation_entry(1, runs["student_scratch"], first, 120, 0.98, described),
        generation_entry(2, runs["student_scratch"], second, 120, 0.98, described),
    ]
    ablation = [{"setting": "method=sp", "student_scratch": 0.8, "student_distilled": 0.7, "method": {"name": "sp"}}]
    _, md_path = write_report(
        _report(ablation, settings=settings, method=described, generations=generations), str(tmp_path)
    )
    text = open(md_path).read()
    assert "Method: dkd+at: dkd (logit_standardization=False, temperature=4.0, soft_weight=0.5" in text
    assert "at on layer1→layer1 (weight 1000)" in text and "cross-entropy (weight 0.5)" in text
    assert "| same data | dkd+at | 200 |" in text and "| method=sp | sp |" in text
    assert text.index("## Born-again generations") < text.index("## Models")
    assert "| 2 | generation 1 | dkd+at | 120 | 97.33 ± 0.58 | 96.00 ± 1.00 | +1.33 |" in text
    assert "| 0 | 96.00 | 96.00 | 97.00 |" in text  # per seed: scratch, generation 1, generation 2
    assert generations[1]["differences"] == pytest.approx([0.01, 0.01, 0.02])
    summary = format_summary(_report(settings=settings, method=described, generations=generations))
    assert (
        summary.splitlines()[1].startswith("method dkd+at: dkd (")
        and "generation 2 (teacher: generation 1)" in summary
    )


def test_summary_keeps_a_long_architecture_name_whole():
    report = _report()
    long_name = "sentence-transformers/all-MiniLM-L6-v2-student"
    report["models"]["student_distilled"]["model_name"] = long_name
    lines = format_summary(report).splitlines()
    header = next(line for line in lines if line.startswith("model"))
    row = next(line for line in lines if long_name in line)
    assert row.index(long_name) == header.index("architecture")
    assert row.index("100") < header.index("params") + len("params") <= row.index("100") + len("100") + 1
