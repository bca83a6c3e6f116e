"""The drop-in claim, tested the way users break it: Trainer call shapes, TrainingArguments fields that shape the loss,
unlabelled rows, -inf and NaN, bad settings, teachers of any precision, and labels the losses cannot take."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import HfArgumentParser, Trainer, TrainingArguments

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.losses import distillation_loss, forward_kl, jsd, logit_mse, reverse_kl, soft_target_loss
from tests.conftest import NUM_LABELS, VOCAB_SIZE, TinyCNN, image_dataset, make_args, text_dataset, tiny_bert

# ---- Call shapes ----


def _plain_args(tmp_path, **overrides):
    base = make_args(tmp_path / "out", **overrides)
    init_fields = {
        key: getattr(base, key)
        for key, spec in TrainingArguments.__dataclass_fields__.items()
        if spec.init and key in vars(base)
    }
    init_fields["report_to"] = []
    return TrainingArguments(**init_fields)


def _weights(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _assert_same(a, b, atol=1e-6):
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-5, msg=key)


def test_positional_call_shapes_of_trainer_work(args_factory):
    dataset = text_dataset(n=24)
    positional, keyword = tiny_bert(seed=1), tiny_bert(seed=1)
    DistillationTrainer(positional, args_factory(), None, dataset, None, teacher_model=tiny_bert(seed=2)).train()
    DistillationTrainer(
        model=keyword, args=args_factory(), train_dataset=dataset, teacher_model=tiny_bert(seed=2)
    ).train()
    _assert_same(_weights(positional), _weights(keyword), atol=0)


def test_plain_training_arguments_are_converted_with_every_field_kept(tmp_path):
    plain = _plain_args(tmp_path, hub_token="hf_secret", label_smoothing_factor=0.1, gradient_accumulation_steps=3)
    trainer = DistillationTrainer(tiny_bert(seed=1), plain, teacher_model=tiny_bert(seed=2))
    converted = trainer.args
    assert isinstance(converted, DistillationTrainingArguments)
    assert converted.hub_token == "hf_secret"  # not the "<HUB_TOKEN>" placeholder of to_dict()
    for key in TrainingArguments.__dataclass_fields__:
        if key in vars(plain):
            assert getattr(converted, key) == getattr(plain, key), key
    assert (converted.alpha, converted.temperature, converted.distillation_loss) == (0.5, 2.0, "forward_kl")
    assert trainer.loss_terms[1].label_smoothing == 0.1


def test_wrong_types_for_args_or_teacher_raise_type_errors(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    # The argument order of the old signature (model, teacher_model, args): the teacher lands in `args`.
    with pytest.raises(TypeError, match="BertForSequenceClassification.*teacher is a keyword"):
        DistillationTrainer(student, teacher, args_factory())
    with pytest.raises(TypeError, match="teacher_model must be an nn.Module.*dict"):
        DistillationTrainer(student, args_factory(), teacher_model={"weights": 1})


def test_compute_loss_func_is_refused_rather_than_ignored(args_factory):
    with pytest.raises(ValueError, match="compute_loss_func"):
        DistillationTrainer(
            tiny_bert(seed=1), args_factory(), teacher_model=tiny_bert(seed=2), compute_loss_func=lambda *a, **k: 0
        )


# ---- TrainingArguments fields that shape the loss ----


@pytest.mark.parametrize("accumulation", [1, 4])
def test_alpha_zero_with_label_smoothing_equals_the_plain_trainer(tmp_path, accumulation):
    dataset = text_dataset(n=40)
    options = dict(
        label_smoothing_factor=0.1,
        per_device_train_batch_size=8 // accumulation,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        learning_rate=5e-2,
    )
    distilled, plain = tiny_bert(seed=1), tiny_bert(seed=1)
    distill_trainer = DistillationTrainer(
        distilled, make_args(tmp_path / "d", alpha=0.0, **options), train_dataset=dataset, teacher_model=tiny_bert()
    )
    distill_trainer.train()
    plain_trainer = Trainer(plain, _plain_args(tmp_path, **options), train_dataset=dataset)
    plain_trainer.train()
    _assert_same(_weights(distilled), _weights(plain))
    losses = [
        [entry["loss"] for entry in t.state.log_history if "loss" in entry] for t in (distill_trainer, plain_trainer)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_label_smoothing_equals_the_trainers_label_smoother():
    from transformers.trainer_pt_utils import LabelSmoother

    logits = torch.randn(6, 5, 7)
    labels = torch.randint(0, 7, (6, 5))
    labels[:, -2:] = -100
    expected = LabelSmoother(epsilon=0.2)({"logits": logits}, labels)
    ours = distillation_loss(logits, torch.randn_like(logits), labels, alpha=0.0, label_smoothing=0.2)
    torch.testing.assert_close(ours, expected)


# ---- Transfer sets: unlabelled examples ----


def _partly_unlabelled(n=32, every=2):
    dataset = text_dataset(n=n)
    return dataset.map(lambda row, i: {"labels": -100 if i % every == 0 else row["labels"]}, with_indices=True)


def test_unlabelled_rows_get_the_soft_loss_and_labelled_rows_the_hard_loss(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    trainer = DistillationTrainer(student, args_factory(alpha=0.7, temperature=3.0), teacher_model=teacher)
    rows = _partly_unlabelled()[:8]
    batch = {key: torch.as_tensor(value) for key, value in rows.items()}
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        s, t = student(input_ids=batch["input_ids"]).logits, teacher(input_ids=batch["input_ids"]).logits
    labelled = batch["labels"] != -100
    assert 0 < labelled.sum() < 8
    kl_all = (F.softmax(t / 3, -1) * (F.log_softmax(t / 3, -1) - F.log_softmax(s / 3, -1))).sum(-1).mean()
    expected = 0.7 * 9 * kl_all + 0.3 * F.cross_entropy(s[labelled], batch["labels"][labelled])
    torch.testing.assert_close(loss, expected)


def test_transfer_set_accumulation_equals_one_large_batch(args_factory):
    """Batches of 4 with uneven labelled counts, accumulated 4 times, give the updates of one batch of 16."""
    dataset = _partly_unlabelled(n=32, every=3)
    large, accumulated = tiny_bert(seed=1), tiny_bert(seed=1)
    DistillationTrainer(
        large,
        args_factory(per_device_train_batch_size=16, max_steps=2),
        train_dataset=dataset,
        teacher_model=tiny_bert(),
    ).train()
    DistillationTrainer(
        accumulated,
        args_factory(per_device_train_batch_size=4, gradient_accumulation_steps=4, max_steps=2),
        train_dataset=dataset,
        teacher_model=tiny_bert(),
    ).train()
    _assert_same(_weights(large), _weights(accumulated), atol=1e-5)


def test_a_batch_with_no_labelled_example_trains_on_the_soft_loss(args_factory):
    dataset = text_dataset(n=16).map(lambda row: {"labels": -100})
    student = tiny_bert(seed=1)
    before = _weights(student)
    trainer = DistillationTrainer(student, args_factory(alpha=0.5), train_dataset=dataset, teacher_model=tiny_bert())
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(math.isfinite(entry["loss"]) and entry["soft_loss"] > 0 and entry["hard_loss"] == 0 for entry in logs)
    assert any(not torch.equal(before[key], value) for key, value in _weights(student).items())


def test_evaluation_on_unlabelled_data_reports_the_soft_loss_and_agreement(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    unlabelled = text_dataset(n=16).remove_columns("labels")
    trainer = DistillationTrainer(student, args_factory(alpha=0.5, temperature=2.0), teacher_model=teacher)
    metrics = trainer.evaluate(unlabelled)
    inputs = torch.as_tensor(unlabelled["input_ids"])
    with torch.no_grad():
        s, t = student(input_ids=inputs).logits, teacher(input_ids=inputs).logits
    soft = soft_target_loss(s, t, temperature=2.0)
    assert metrics["eval_soft_loss"] == pytest.approx(soft.item(), rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(0.5 * soft.item(), rel=1e-5)
    assert metrics["eval_teacher_agreement"] == pytest.approx((s.argmax(-1) == t.argmax(-1)).float().mean().item())
    assert "eval_accuracy" not in metrics


def test_alpha_one_with_load_best_model_at_end_on_unlabelled_data(args_factory):
    unlabelled = text_dataset(n=16).remove_columns("labels")
    args = args_factory(
        alpha=1.0,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
    )
    trainer = DistillationTrainer(
        tiny_bert(seed=1), args, train_dataset=unlabelled, eval_dataset=unlabelled, teacher_model=tiny_bert(seed=2)
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(evaluations) == 2
    assert trainer.state.best_metric == min(entry["eval_loss"] for entry in evaluations)


# ---- Numerics ----

DIVERGENCE_FUNCTIONS = [forward_kl, reverse_kl, jsd, logit_mse]


@pytest.mark.parametrize("divergence", DIVERGENCE_FUNCTIONS, ids=lambda fn: fn.__name__)
def test_teacher_minus_inf_columns_are_outside_the_support(divergence):
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6)
    teacher[:, 4:] = -math.inf  # a padded vocabulary
    teacher[1, 0] = -math.inf  # and a column masked in one row only
    loss = divergence(student, teacher, 2.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(student.grad).all()
    assert (student.grad[:, 4:] == 0).all() and student.grad[1, 0] == 0
    for row in range(4):
        keep = torch.isfinite(teacher[row])
        sliced = divergence(student[row, keep][None], teacher[row, keep][None], 2.0)
        torch.testing.assert_close(loss[row], sliced[0])


def test_finite_teacher_logits_give_the_same_values_as_before():
    """Without a -inf column the values are bit for bit those of the plain formula (which matched TRL's GKD loss)."""
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    expected = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), reduction="none", log_target=True)
    expected = expected.sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher), expected, rtol=0, atol=0)


def test_nan_in_the_teachers_outputs_stops_training_at_that_step(args_factory):
    class BreaksAtCall(torch.nn.Module):
        def __init__(self, breaks_at):
            super().__init__()
            self.inner, self.calls, self.breaks_at = TinyCNN(seed=2), 0, breaks_at

        def forward(self, x):
            self.calls += 1
            logits = self.inner(x)
            return logits * float("nan") if self.calls >= self.breaks_at else logits

    trainer = DistillationTrainer(
        TinyCNN(seed=1),
        args_factory(per_device_train_batch_size=4, max_steps=4),
        train_dataset=image_dataset(),
        teacher_model=BreaksAtCall(breaks_at=3),
    )
    with pytest.raises(ValueError, match="At step 2 the teacher's logits are NaN"):
        trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize(
    "overrides, field_name",
    [
        (dict(temperature=math.inf), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(alpha=math.nan), "alpha"),
        (dict(soft_weight=math.nan, hard_weight=1.0), "soft_weight"),
        (dict(soft_weight=1.0, hard_weight=math.inf), "hard_weight"),
    ],
)
def test_non_finite_settings_are_refused(tmp_path, overrides, field_name):
    with pytest.raises(ValueError, match=f"{field_name} must be a finite number"):
        make_args(tmp_path, **overrides)


def test_all_zero_weights_are_refused(args_factory):
    with pytest.raises(ValueError, match="weight 0"):
        DistillationTrainer(
            tiny_bert(seed=1), args_factory(soft_weight=0.0, hard_weight=0.0), teacher_model=tiny_bert(seed=2)
        )


def test_softmax_divergence_on_a_single_logit_is_refused(args_factory):
    with pytest.raises(ValueError, match="single logit.*distillation_loss='mse'"):
        DistillationTrainer(tiny_bert(num_labels=1, seed=1), args_factory(), teacher_model=tiny_bert(num_labels=1))


def test_regression_distillation_with_mse(args_factory):
    """A single-logit student with float labels: hard loss = squared error, soft loss = logit MSE."""
    dataset = text_dataset(n=16).map(lambda row: {"labels": float(row["labels"]) / 2})
    student, teacher = tiny_bert(num_labels=1, seed=1), tiny_bert(num_labels=1, seed=2)
    trainer = DistillationTrainer(
        student, args_factory(alpha=0.4, distillation_loss="mse"), train_dataset=dataset, teacher_model=teacher
    )
    rows = dataset[:8]
    batch = {key: torch.as_tensor(value) for key, value in rows.items()}
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        s, t = student(input_ids=batch["input_ids"]).logits, teacher(input_ids=batch["input_ids"]).logits
    expected = 0.4 * F.mse_loss(s, t) + 0.6 * F.mse_loss(s.squeeze(-1), batch["labels"].float())
    torch.testing.assert_close(loss, expected)
    student.train()
    trainer.train()
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


# ---- Teachers ----


def test_teacher_dtype_runs_a_timm_style_teacher_on_float32_inputs(args_factory):
    teacher = TinyCNN(width=8, seed=2)
    reference = TinyCNN(width=8, seed=2)
    trainer = DistillationTrainer(
        TinyCNN(seed=1),
        args_factory(teacher_dtype="bfloat16", max_steps=2),
        train_dataset=image_dataset(),
        teacher_model=teacher,
    )
    # The documented choice: the caller's teacher is cast in place (no second copy of a large model).
    assert trainer.teacher_model is teacher and next(teacher.parameters()).dtype == torch.bfloat16
    trainer.train()
    batch = {key: torch.as_tensor(value) for key, value in image_dataset()[:8].items()}
    with torch.no_grad():
        low, high = trainer.get_teacher_outputs(batch, None)[0], reference(batch["pixel_values"])
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), high, atol=0.05, rtol=0.05)


def test_a_teacher_sharing_parameters_with_the_student_is_refused(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    teacher.bert.embeddings = student.bert.embeddings
    with pytest.raises(ValueError, match=r"bert\.embeddings\.word_embeddings\.weight"):
        DistillationTrainer(student, args_factory(), teacher_model=teacher)
    assert all(parameter.requires_grad for parameter in student.parameters())


def test_teacher_model_init_kwargs_from_the_command_line(tmp_path):
    (args,) = HfArgumentParser(DistillationTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--teacher_model_init_kwargs", '{"torch_dtype": "float32", "num_labels": "3"}']
    )
    assert args.teacher_model_init_kwargs == {"torch_dtype": "float32", "num_labels": 3}
    with pytest.raises(ValueError, match="teacher_model_init_kwargs must be a dict"):
        DistillationTrainingArguments(output_dir=str(tmp_path), teacher_model_init_kwargs="torch_dtype=float32")


def test_a_missing_local_teacher_folder_is_named(args_factory, tmp_path):
    missing = tmp_path / "no_such_teacher"
    with pytest.raises(FileNotFoundError, match="no_such_teacher.*does not exist"):
        DistillationTrainer(tiny_bert(seed=1), args_factory(), teacher_model=str(missing))


def test_a_teacher_given_by_path_is_loaded(args_factory, tmp_path):
    tiny_bert(seed=2).save_pretrained(tmp_path / "teacher")
    trainer = DistillationTrainer(tiny_bert(seed=1), args_factory(), teacher_model=str(tmp_path / "teacher"))
    torch.testing.assert_close(
        trainer.teacher_model.classifier.weight, tiny_bert(seed=2).classifier.weight, rtol=0, atol=0
    )


# ---- Labels the losses cannot take ----


def _train(dataset, args_factory, student=None, teacher=None):
    trainer = DistillationTrainer(
        student or tiny_bert(seed=1), args_factory(), train_dataset=dataset, teacher_model=teacher or tiny_bert(seed=2)
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0.5] * 16, r"column 'labels' \(double.*holds floats.*3 logits"),
        ([[0.0, 1.0, 1.0]] * 16, r"column 'labels' \(double, lists.*multi-label"),
        ([NUM_LABELS] + [0] * 15, r"column 'labels' .* ids from 0 to 3.*3 logits.*0\.\.2"),
        ([-1] + [0] * 15, r"ids from -1 to 0"),
        (["a"] * 16, r"column 'labels' \(string.*expected integer class ids"),
    ],
    ids=["float", "multi-label", "beyond-range", "negative", "strings"],
)
def test_labels_the_losses_cannot_take_fail_before_the_first_step(args_factory, labels, message):
    dataset = text_dataset(n=16).remove_columns("labels").add_column("labels", labels)
    trainer = DistillationTrainer(
        tiny_bert(seed=1), args_factory(), train_dataset=dataset, teacher_model=tiny_bert(seed=2)
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0


def test_token_ids_beyond_either_vocabulary_fail_before_the_first_step(args_factory):
    ids = torch.randint(0, VOCAB_SIZE, (16, 8))
    ids[3, 2] = VOCAB_SIZE + 5
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": [0] * 16})
    with pytest.raises(ValueError, match=f"token id {VOCAB_SIZE + 5}.*student has only {VOCAB_SIZE}"):
        _train(dataset, args_factory)
    # In the student's vocabulary but not in a smaller teacher's.
    ids[3, 2] = VOCAB_SIZE - 1
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": [0] * 16})
    small_teacher = tiny_bert(seed=2)
    small_teacher.resize_token_embeddings(VOCAB_SIZE - 4)
    with pytest.raises(ValueError, match=f"teacher has only {VOCAB_SIZE - 4}"):
        _train(dataset, args_factory, teacher=small_teacher)


def test_a_selected_subset_is_checked_for_its_own_rows_only(args_factory):
    """Rows a user filtered out (bad labels among them) are not held against the dataset."""
    dataset = text_dataset(n=17).remove_columns("labels").add_column("labels", [NUM_LABELS + 3] + [1] * 16)
    trainer = _train(dataset.select(range(1, 17)), args_factory)
    assert trainer.state.global_step == 3
