"""DistillationTrainer on tiny models built in code: the loss, the teacher, accumulation, checkpoints, logs."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from hf_distill import DistillationTrainer, HiddenStateCosineTerm
from tests.conftest import (
    TinyCNN,
    image_dataset,
    lm_dataset,
    text_dataset,
    tiny_bert,
    tiny_gpt2,
)


def _batch(dataset, n=8):
    rows = dataset[:n]
    return {key: torch.as_tensor(value) for key, value in rows.items()}


def _hinton(student_logits, teacher_logits, labels, alpha, T):
    """The formula, written out: alpha * T² * KL(p_t || p_s) + (1 - alpha) * CE, averaged over examples."""
    p_t = F.softmax(teacher_logits / T, -1)
    kl = (p_t * (F.log_softmax(teacher_logits / T, -1) - F.log_softmax(student_logits / T, -1))).sum(-1).mean()
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def _state(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _assert_same_weights(a, b, atol=1e-6):
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-5, msg=key)


def test_compute_loss_matches_the_formula_for_a_transformers_classifier(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args_factory(alpha=0.7, temperature=4.0))
    batch = _batch(text_dataset())
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        expected = _hinton(
            student(input_ids=batch["input_ids"]).logits,
            teacher(input_ids=batch["input_ids"]).logits,
            batch["labels"],
            0.7,
            4.0,
        )
    torch.testing.assert_close(loss, expected)


def test_compute_loss_matches_the_formula_for_a_timm_style_module(args_factory):
    student, teacher = TinyCNN(seed=1), TinyCNN(width=8, seed=2)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args_factory(alpha=0.3, temperature=2.0))
    batch = _batch(image_dataset())
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        expected = _hinton(student(batch["pixel_values"]), teacher(batch["pixel_values"]), batch["labels"], 0.3, 2.0)
    torch.testing.assert_close(loss, expected)


def test_causal_lm_loss_is_token_level_with_the_shift(args_factory):
    student, teacher = tiny_gpt2(seed=1), tiny_gpt2(seed=2, layers=3)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args_factory(alpha=0.6, temperature=2.0))
    batch = _batch(lm_dataset())
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        s = student(input_ids=batch["input_ids"]).logits[:, :-1]
        t = teacher(input_ids=batch["input_ids"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        expected = _hinton(s[mask], t[mask], labels[mask], 0.6, 2.0)
        own_loss = student(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss, expected)
    # With alpha=0 the trainer's loss is the model's own causal-LM loss.
    trainer.loss_terms[0].weight, trainer.loss_terms[1].weight = 0.0, 1.0
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(student, batch), own_loss)


def test_alpha_zero_reproduces_the_plain_trainer(args_factory, tmp_path):
    dataset = text_dataset(n=24)
    student_a, student_b, teacher = tiny_bert(seed=1), tiny_bert(seed=1), tiny_bert(seed=2)
    distill_args = args_factory(alpha=0.0, max_steps=3, learning_rate=1e-2)
    plain_args = TrainingArguments(
        **{
            k: v
            for k, v in distill_args.to_dict().items()
            if k in TrainingArguments.__dataclass_fields__ and TrainingArguments.__dataclass_fields__[k].init
        }
    )
    plain_args.output_dir = str(tmp_path / "plain")
    DistillationTrainer(model=student_a, teacher_model=teacher, args=distill_args, train_dataset=dataset).train()
    plain = Trainer(model=student_b, args=plain_args, train_dataset=dataset)
    plain.train()
    _assert_same_weights(_state(student_a), _state(student_b))


def test_alpha_one_trains_without_labels(args_factory):
    dataset = text_dataset().remove_columns("labels")
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    before = _state(student)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args_factory(alpha=1.0), train_dataset=dataset
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all("soft_loss" in entry and "hard_loss" not in entry for entry in logs)
    assert any(not torch.equal(before[key], value) for key, value in _state(student).items())


def test_hard_loss_needs_labels(args_factory):
    dataset = text_dataset().remove_columns("labels")
    trainer = DistillationTrainer(
        model=tiny_bert(), teacher_model=tiny_bert(seed=2), args=args_factory(alpha=0.5), train_dataset=dataset
    )
    with pytest.raises(ValueError, match="hard loss has weight 0.5.*no `labels`"):
        trainer.train()


@pytest.mark.parametrize("kind", ["classifier", "causal_lm"])
def test_gradient_accumulation_matches_the_larger_batch(args_factory, kind):
    if kind == "classifier":
        dataset, make = text_dataset(n=16), lambda: (tiny_bert(seed=1), tiny_bert(seed=2))
    else:  # rows with different numbers of labelled tokens: a per-micro-batch mean would weigh them wrongly
        dataset, make = lm_dataset(n=16), lambda: (tiny_gpt2(seed=1), tiny_gpt2(seed=2, layers=3))
    states = []
    for batch_size, accumulation in ((16, 1), (4, 4)):
        student, teacher = make()
        args = args_factory(
            max_steps=2,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            learning_rate=1e-2,
            optim="sgd",
        )
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset).train()
        states.append(_state(student))
    _assert_same_weights(*states, atol=1e-5)


def test_teacher_is_frozen_in_eval_mode_and_unchanged(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    teacher.train()
    before = _state(teacher)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args_factory(), train_dataset=text_dataset()
    )
    trainer.train()
    assert not trainer.teacher_model.training
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher_model.parameters())
    _assert_same_weights(before, _state(teacher), atol=0)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in teacher.parameters())


def test_teacher_runs_without_autograd(args_factory):
    calls = []
    teacher = tiny_bert(seed=2)
    teacher.register_forward_hook(lambda module, args, output: calls.append(torch.is_grad_enabled()))
    trainer = DistillationTrainer(
        model=tiny_bert(seed=1), teacher_model=teacher, args=args_factory(max_steps=1), train_dataset=text_dataset()
    )
    trainer.train()
    assert calls == [False]


def test_mismatched_label_spaces_are_refused_before_training_naming_both(args_factory):
    with pytest.raises(ValueError, match="student predicts 3 classes and the teacher 4"):
        DistillationTrainer(
            model=tiny_bert(num_labels=3),
            teacher_model=tiny_bert(num_labels=4),
            args=args_factory(),
            train_dataset=text_dataset(),
        )
    with pytest.raises(ValueError, match="student has 40 logits per position and the teacher 50.*tokenizers"):
        DistillationTrainer(
            model=tiny_gpt2(vocab_size=40),
            teacher_model=tiny_gpt2(vocab_size=50),
            args=args_factory(),
            train_dataset=lm_dataset(),
        )


def test_teacher_cannot_be_the_student(args_factory):
    student = tiny_bert()
    with pytest.raises(ValueError, match="student itself"):
        DistillationTrainer(model=student, teacher_model=student, args=args_factory())


def test_a_missing_teacher_needs_zero_soft_weight_or_cached_logits(args_factory):
    trainer = DistillationTrainer(model=tiny_bert(), args=args_factory(alpha=0.0), train_dataset=text_dataset())
    trainer.train()
    assert all("soft_loss" not in entry for entry in trainer.state.log_history)
    trainer = DistillationTrainer(model=tiny_bert(), args=args_factory(alpha=0.5), train_dataset=text_dataset())
    with pytest.raises(ValueError, match="soft loss has weight 0.5.*no teacher outputs"):
        trainer.train()


def test_cached_teacher_logits_give_the_live_teachers_loss(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    dataset = text_dataset()
    batch = _batch(dataset)
    with torch.no_grad():
        cached = teacher(input_ids=batch["input_ids"]).logits
    live = DistillationTrainer(model=student, teacher_model=teacher, args=args_factory())
    offline = DistillationTrainer(model=student, args=args_factory())
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            offline.compute_loss(student, {**batch, "teacher_logits": cached}), live.compute_loss(student, batch)
        )
    # The column survives the Trainer's removal of unused columns and trains.
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor(dataset["input_ids"])).logits
    offline_dataset = dataset.add_column("teacher_logits", logits.tolist())
    offline = DistillationTrainer(model=tiny_bert(seed=1), args=args_factory(), train_dataset=offline_dataset)
    offline.train()
    assert "soft_loss" in offline.state.log_history[0]


def test_logs_show_each_term_next_to_the_total(args_factory):
    trainer = DistillationTrainer(
        model=tiny_bert(seed=1),
        teacher_model=tiny_bert(seed=2),
        args=args_factory(alpha=0.7),
        train_dataset=text_dataset(),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert entry["loss"] == pytest.approx(0.7 * entry["soft_loss"] + 0.3 * entry["hard_loss"], rel=1e-4)


def test_evaluation_reports_loss_accuracy_and_agreement(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    dataset = text_dataset(n=20)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args_factory(alpha=0.7), eval_dataset=dataset
    )
    metrics = trainer.evaluate()
    batch = _batch(dataset, n=20)
    student.eval()
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"]).logits
        t = teacher(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    assert metrics["eval_loss"] == pytest.approx(_hinton(s, t, labels, 0.7, 4.0).item(), rel=1e-4)
    assert metrics["eval_accuracy"] == pytest.approx((s.argmax(-1) == labels).float().mean().item())
    assert metrics["eval_teacher_accuracy"] == pytest.approx((t.argmax(-1) == labels).float().mean().item())
    assert metrics["eval_teacher_agreement"] == pytest.approx((s.argmax(-1) == t.argmax(-1)).float().mean().item())
    assert {"eval_soft_loss", "eval_hard_loss"} <= set(metrics)


def test_user_compute_metrics_sees_student_logits(args_factory):
    from hf_distill import classification_metrics

    trainer = DistillationTrainer(
        model=tiny_bert(seed=1),
        teacher_model=tiny_bert(seed=2),
        args=args_factory(),
        eval_dataset=text_dataset(),
        compute_metrics=classification_metrics(),
    )
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_predict_on_unlabelled_images_with_a_timm_style_student(args_factory):
    student = TinyCNN(seed=1)
    trainer = DistillationTrainer(model=student, teacher_model=TinyCNN(seed=2), args=args_factory())
    dataset = image_dataset(n=10)
    output = trainer.predict(dataset.remove_columns("labels"))
    with torch.no_grad():
        expected = student(dataset[:]["pixel_values"])
    torch.testing.assert_close(torch.as_tensor(output.predictions), expected)
    labelled = trainer.predict(dataset)
    assert "test_loss" in labelled.metrics and "test_teacher_agreement" in labelled.metrics


def _timm_trainer(args, student, teacher):
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=image_dataset(n=32))


def test_checkpoints_and_save_model_hold_the_student_only(args_factory, tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2, layers=3)
    args = args_factory(max_steps=2, save_strategy="steps", save_steps=2)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset())
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "final", tmp_path / "out" / "checkpoint-2"):
        weights = load_file(str(folder / "model.safetensors"))
        assert set(weights) == set(student.state_dict())
        assert not any("layer.2." in key for key in weights)  # the 3-layer teacher's extra layer
    # A plain nn.Module student is saved the same way.
    student, teacher = TinyCNN(seed=1), TinyCNN(width=8, seed=2)
    trainer = _timm_trainer(args_factory(max_steps=1), student, teacher)
    trainer.train()
    trainer.save_model(str(tmp_path / "cnn"))
    weights = load_file(str(tmp_path / "cnn" / "model.safetensors"))
    assert {key: value.shape for key, value in weights.items()} == {
        k: v.shape for k, v in student.state_dict().items()
    }


@pytest.mark.parametrize("family", ["transformers", "timm-style"])
def test_resuming_from_a_checkpoint_continues_the_same_run(args_factory, family):
    def make():
        if family == "transformers":
            return tiny_bert(seed=1), tiny_bert(seed=2), text_dataset(n=32)
        return TinyCNN(seed=1), TinyCNN(width=8, seed=2), image_dataset(n=32)

    student, teacher, dataset = make()
    args = args_factory(max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=3)
    DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset).train()
    uninterrupted = _state(student)
    checkpoint = os.path.join(args.output_dir, "checkpoint-3")
    assert os.path.isdir(checkpoint)

    student, teacher, dataset = make()
    resumed = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.state.global_step == 6
    _assert_same_weights(uninterrupted, _state(student), atol=1e-6)


def test_extra_loss_terms_are_added_and_logged(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    term = HiddenStateCosineTerm(weight=2.0)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args_factory(alpha=0.5), extra_loss_terms=[term]
    )
    batch = _batch(text_dataset())
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][:, 6:] = 0
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        mask = batch["attention_mask"].bool()
        cosine = (1 - F.cosine_similarity(s.hidden_states[-1], t.hidden_states[-1], dim=-1))[mask].mean()
    torch.testing.assert_close(loss, _hinton(s.logits, t.logits, batch["labels"], 0.5, 4.0) + 2.0 * cosine)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args_factory(),
        extra_loss_terms=[term],
        train_dataset=text_dataset(),
        data_collator=None,
    )
    trainer.train()
    assert "cosine_loss" in trainer.state.log_history[0]


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_teacher_dtype_runs_the_teacher_in_lower_precision(args_factory, mixed_precision):
    trainer = DistillationTrainer(
        model=tiny_bert(seed=1),
        teacher_model=tiny_bert(seed=2),
        train_dataset=text_dataset(),
        args=args_factory(teacher_dtype="bfloat16", bf16=mixed_precision),
    )
    assert next(trainer.teacher_model.parameters()).dtype == torch.bfloat16
    trainer.train()
    assert next(trainer.model.parameters()).dtype == torch.float32
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_deepspeed_without_the_library_is_a_clear_error(monkeypatch):
    import builtins
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hf_distill.teachers import prepare_teacher

    real_import = builtins.__import__

    def no_deepspeed(name, *args, **kwargs):
        if name == "deepspeed":
            raise ImportError("No module named 'deepspeed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_deepspeed)
    accelerator = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    with pytest.raises(ImportError, match="pip install deepspeed"):
        prepare_teacher(tiny_bert(), accelerator)
