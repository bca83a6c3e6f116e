"""The paired statistics of a comparison and the transfer-set data of its second setting, checked by hand."""

import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from scipy import stats

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation.ablation import ablation_entry
from hf_distill.evaluation.settings import (
    SAME_DATA,
    TRANSFER_SET,
    setting_entry,
    stratified_indices,
    training_labels,
    transfer_split,
    without_labels,
)
from hf_distill.evaluation.statistics import NO_DIFFERENCE, paired_difference, paired_entry
from hf_distill.evaluation.training import budget_steps, labels_only, teacher_arguments, use_cpu_threads


def t_interval(differences):
    """The 95% Student's t-interval of the mean, written out: mean ± t_{0.975, n-1} · sd / √n."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    mean = d.sum() / n
    sd = math.sqrt(((d - mean) ** 2).sum() / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_paired_difference_equals_a_direct_t_interval():
    scratch = [0.9600, 0.9622, 0.9556, 0.9644, 0.9578]
    distilled = [0.9711, 0.9689, 0.9667, 0.9733, 0.9644]
    result = paired_difference(scratch, distilled)
    differences = [d - s for s, d in zip(scratch, distilled, strict=True)]
    mean, low, high = t_interval(differences)
    assert result["n"] == 5 and result["differences"] == pytest.approx(differences)
    assert result["mean"] == pytest.approx(mean)
    assert result["sd"] == pytest.approx(np.std(differences, ddof=1))
    assert result["t_critical"] == pytest.approx(2.7764451, abs=1e-6)  # t_{0.975, 4}
    assert result["ci95"] == pytest.approx([low, high])
    assert low > 0 and result["significant"] and result["verdict"] == "significant: distilled better"


def test_an_interval_that_contains_zero_is_no_significant_difference():
    scratch, distilled = [0.96, 0.97, 0.95], [0.97, 0.96, 0.96]  # +1, -1, +1 points
    result = paired_difference(scratch, distilled)
    mean, low, high = t_interval([0.01, -0.01, 0.01])
    assert result["ci95"] == pytest.approx([low, high]) and low < 0 < high
    assert result["t_critical"] == pytest.approx(stats.t.ppf(0.975, 2))
    assert not result["significant"] and result["verdict"] == NO_DIFFERENCE
    # the means alone differ: the pairing is what the interval is about
    worse = paired_difference([0.9, 0.8, 0.85, 0.95], [0.88, 0.79, 0.83, 0.94])
    assert worse["ci95"][1] < 0 and worse["significant"] and worse["verdict"] == "significant: distilled worse"


def test_degenerate_seeds():
    one = paired_difference([0.9], [0.95])
    assert one["mean"] == pytest.approx(0.05) and one["ci95"] is None and one["sd"] is None
    assert not one["significant"] and one["verdict"] == NO_DIFFERENCE  # one seed proves nothing
    equal = paired_difference([0.9, 0.8], [0.9, 0.8])
    assert equal["ci95"] == [0.0, 0.0] and not equal["significant"]
    with pytest.raises(ValueError, match="one scratch and one distilled value per seed"):
        paired_difference([0.9, 0.8], [0.9])
    with pytest.raises(ValueError, match="per seed"):
        paired_difference([], [])


def _runs(scratch, distilled, seeds=(0, 1, 2)):
    return {
        "student_scratch": [{"seed": s, "accuracy": a} for s, a in zip(seeds, scratch, strict=True)],
        "student_distilled": [{"seed": s, "accuracy": a} for s, a in zip(seeds, distilled, strict=True)],
    }


def test_setting_and_ablation_entries_hold_the_paired_statistics():
    scratch, distilled = [0.80, 0.84, 0.82], [0.90, 0.91, 0.89]
    entry = setting_entry(TRANSFER_SET, _runs(scratch, distilled), 20, 180, 120, 0.97, 450)
    mean, low, high = t_interval(np.subtract(distilled, scratch))
    assert entry["setting"] == TRANSFER_SET and entry["title"] == "transfer set"
    assert (entry["labelled_examples"], entry["unlabelled_examples"]) == (20, 180)
    assert (entry["scratch_train_examples"], entry["distilled_train_examples"], entry["max_steps"]) == (20, 200, 120)
    assert entry["student_scratch_accuracies"] == scratch and entry["student_distilled_accuracies"] == distilled
    assert entry["student_scratch"] == pytest.approx(np.mean(scratch))
    assert entry["student_distilled_std"] == pytest.approx(np.std(distilled, ddof=1))
    assert entry["difference_mean"] == pytest.approx(mean)
    assert entry["difference_ci95"] == pytest.approx([low, high]) and entry["significant"] is True
    assert entry["seeds"] == [0, 1, 2] and entry["eval_examples"] == 450
    same = setting_entry(SAME_DATA, _runs(scratch, scratch), 200, 0, 120, 0.97, 450)
    assert same["difference_mean"] == 0 and same["significant"] is False and same["verdict"] == NO_DIFFERENCE
    ablation = ablation_entry("temperature=1", 200, 0.97, _runs(scratch, distilled), True, 120)
    assert ablation["difference_ci95"] == pytest.approx([low, high]) and ablation["max_steps"] == 120
    assert ablation["student_scratch_reused"] and ablation["student_distilled_accuracies"] == distilled
    shuffled = {
        **_runs(scratch, distilled),
        "student_distilled": _runs(distilled, scratch, (2, 1, 0))["student_scratch"],
    }
    with pytest.raises(ValueError, match="seeds"):
        paired_entry(shuffled)


def _labelled_dataset(n=40, classes=4):
    labels = [i % classes for i in range(n)]
    features = Features({"x": Value("float32"), "labels": ClassLabel(num_classes=classes)})
    data = Dataset.from_dict({"x": [float(i) for i in range(n)], "labels": labels}, features=features)
    # as the vision recipes build it: a subset (an indices mapping) with a transform that needs every column
    data = data.select(range(n - 1, -1, -1))

    def transform(batch):
        return {"pixel_values": [torch.full((2,), v) for v in batch["x"]], "labels": list(batch["labels"])}

    return data.with_transform(transform)


def test_transfer_split_hides_the_labels_of_all_but_a_stratified_part():
    data = _labelled_dataset()
    split = transfer_split(data, 0.25, seed=3)
    assert (split.labelled_examples, split.unlabelled_examples) == (10, 30)
    labelled = training_labels(split.labelled)
    assert sorted(np.bincount(labelled).tolist()) == [2, 2, 3, 3]  # 10 of 40, the class shares kept
    transfer = training_labels(split.transfer)
    assert len(transfer) == 40 and (transfer == -100).sum() == 30
    original = training_labels(data)
    kept = transfer != -100
    assert (transfer[kept] == original[kept]).all()
    # the same rows, in the same order, still read through the transform
    assert [split.transfer[i]["pixel_values"].tolist() for i in (0, 39)] == [[39.0, 39.0], [0.0, 0.0]]
    assert sorted(split.labelled.with_format(None)["x"]) == sorted(np.asarray(data.with_format(None)["x"])[kept])
    assert split.labelled[0]["labels"] >= 0 and split.transfer[0]["labels"] in (-100, 3)
    # fixed by the seed, different for another seed
    again = transfer_split(data, 0.25, seed=3)
    assert training_labels(again.transfer).tolist() == transfer.tolist()
    assert training_labels(transfer_split(data, 0.25, seed=4).transfer).tolist() != transfer.tolist()


def test_stratified_indices_and_without_labels():
    labels = np.array([0] * 90 + [1] * 10)
    keep = stratified_indices(labels, 10, seed=0)
    assert len(keep) == 10 and (labels[keep] == 1).sum() == 1 and (np.diff(keep) > 0).all()
    assert len(stratified_indices(labels, 1, seed=0)) == 2  # at least one per class
    data = _labelled_dataset(8, 2)
    hidden = training_labels(without_labels(data, np.array([0, 5])))
    assert hidden.tolist() == [1, -100, -100, -100, -100, 0, -100, -100]
    with pytest.raises(ValueError, match="`labels` column"):
        training_labels([{"labels": 0}])


@pytest.mark.parametrize(
    "examples, batch, processes, accumulation, epochs, max_steps, expected",
    [
        (200, 64, 1, 1, 30, -1, 120),  # 4 batches an epoch
        (1347, 64, 1, 1, 6, -1, 132),  # 22 batches
        (200, 32, 2, 1, 30, -1, 120),  # two processes: the same global batch
        (1347, 16, 1, 4, 1.5, -1, 33),  # 85 batches, 22 optimizer steps an epoch
        (1347, 64, 1, 1, 6, 50, 50),  # max_steps wins
    ],
)
def test_budget_steps_counts_the_trainer_steps(examples, batch, processes, accumulation, epochs, max_steps, expected):
    args = DistillationTrainingArguments(
        output_dir="unused",
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        max_steps=max_steps,
        report_to="none",
    )
    assert budget_steps(args, examples, processes) == expected


def test_use_cpu_threads_sets_torch_threads_only_when_asked():
    before = torch.get_num_threads()
    try:
        use_cpu_threads(None)
        assert torch.get_num_threads() == before
        use_cpu_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_students_from_scratch_and_teachers_train_on_the_labels_alone_whatever_the_weights(tmp_path):
    """Explicit soft/hard weights override alpha: runs without a teacher must drop them, not fail for lack of one."""
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path), soft_weight=5.0, hard_weight=2.0, temperature=3.0, report_to="none"
    )
    scratch = labels_only(args, seed=7)
    assert scratch.loss_weights == (0.0, 1.0) and scratch.seed == 7 and scratch.temperature == 3.0
    options = type("Options", (), {"teacher_epochs": 4, "teacher_learning_rate": 1e-3})()
    assert teacher_arguments(args, options).loss_weights == (0.0, 1.0)
    assert args.loss_weights == (5.0, 2.0)  # the distilled runs keep theirs
