"""Several teachers: the weighted mixture of their tempered probabilities, and routing examples by a column."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hf_distill import DistillationTrainer, FeatureTerm, TeacherEnsemble
from hf_distill.teachers import mixture_logits
from tests.conftest import lm_dataset, text_dataset, tiny_bert, tiny_gpt2


def _batch(dataset, n=8):
    return {key: torch.as_tensor(value) for key, value in dataset[:n].items()}


def _state(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _train(args, teacher_model, dataset=None, student_seed=1):
    student = tiny_bert(seed=student_seed)
    trainer = DistillationTrainer(
        student, args, train_dataset=dataset if dataset is not None else text_dataset(), teacher_model=teacher_model
    )
    trainer.train()
    return _state(student), trainer


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_mixture_logits_give_the_weighted_mean_of_tempered_probabilities(temperature):
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 7, generator=generator) * 3 for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    mixed = mixture_logits(logits, weights, temperature)
    expected = sum(w * F.softmax(z / temperature, -1) for w, z in zip(weights, logits, strict=True))
    torch.testing.assert_close(F.softmax(mixed / temperature, -1), expected)
    # Unnormalised weights are normalised; a masked class (-inf for every teacher) stays -inf.
    torch.testing.assert_close(mixture_logits(logits, [2.0, 5.0, 3.0], temperature), mixed)
    masked = [z.clone().index_fill_(1, torch.tensor([2]), -torch.inf) for z in logits]
    assert torch.isneginf(mixture_logits(masked, weights, temperature)[:, 2]).all()


def test_one_teacher_in_a_list_gives_exactly_the_single_teacher_run(args_factory):
    single, _ = _train(args_factory(), tiny_bert(seed=2))
    listed, trainer = _train(args_factory(), [tiny_bert(seed=2)])
    assert isinstance(trainer.teacher_model, TeacherEnsemble)
    for key in single:
        assert torch.equal(single[key], listed[key]), key


def test_two_copies_of_the_teacher_give_the_single_teacher_run(args_factory):
    """Equal to rounding (the mixture goes through log-probabilities); SGD keeps it there, where Adam would
    magnify relative differences in the tiniest gradients."""
    teacher = tiny_bert(seed=2)
    single, _ = _train(args_factory(optim="sgd"), copy.deepcopy(teacher))
    for teachers, weights in (
        ([copy.deepcopy(teacher), copy.deepcopy(teacher)], [0.3, 0.7]),
        ({"a": teacher, "b": copy.deepcopy(teacher)}, None),
    ):
        doubled, _ = _train(args_factory(optim="sgd", teacher_weights=weights), teachers)
        for key in single:
            torch.testing.assert_close(doubled[key], single[key], atol=1e-6, rtol=0, msg=key)


def test_the_soft_target_is_the_weighted_mixture_of_probabilities(args_factory):
    student, teachers = tiny_bert(seed=1), {"small": tiny_bert(seed=2), "deep": tiny_bert(seed=3, layers=3)}
    T = 2.0
    args = args_factory(alpha=1.0, temperature=T, teacher_weights={"deep": 3.0, "small": 1.0})
    trainer = DistillationTrainer(student, args, teacher_model=teachers)
    batch = _batch(text_dataset())
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        probs = {name: F.softmax(t(input_ids=batch["input_ids"]).logits / T, -1) for name, t in teachers.items()}
        mixture = 0.25 * probs["small"] + 0.75 * probs["deep"]
        log_student = F.log_softmax(student(input_ids=batch["input_ids"]).logits / T, -1)
        expected = T**2 * (mixture * (mixture.log() - log_student)).sum(-1).mean()
    torch.testing.assert_close(loss, expected)


def test_token_level_mixture_with_the_causal_shift(args_factory):
    student, teachers = tiny_gpt2(seed=1), [tiny_gpt2(seed=2), tiny_gpt2(seed=3, layers=3)]
    T = 2.0
    trainer = DistillationTrainer(student, args_factory(alpha=1.0, temperature=T), teacher_model=teachers)
    batch = _batch(lm_dataset())
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        mask = batch["labels"][:, 1:] != -100
        mixture = sum(0.5 * F.softmax(t(input_ids=batch["input_ids"]).logits[:, :-1] / T, -1) for t in teachers)
        log_student = F.log_softmax(student(input_ids=batch["input_ids"]).logits[:, :-1] / T, -1)
        expected = T**2 * (mixture * (mixture.log() - log_student)).sum(-1)[mask].mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("keys", ["list", "dict"])
def test_a_column_routes_each_example_to_its_teacher(args_factory, keys):
    teacher_a, teacher_b = tiny_bert(seed=2), tiny_bert(seed=3, layers=3)
    values = [0, 1] if keys == "list" else ["news", "code"]
    teachers = [teacher_a, teacher_b] if keys == "list" else dict(zip(values, (teacher_a, teacher_b), strict=True))
    dataset = text_dataset(n=16)
    dataset = dataset.add_column("domain", [values[i % 3 == 0] for i in range(16)])
    student = tiny_bert(seed=1)
    trainer = DistillationTrainer(
        student,
        args_factory(alpha=1.0, temperature=2.0, teacher_column="domain"),
        train_dataset=dataset,
        teacher_model=teachers,
    )
    # The column survives the Trainer's column removal and reaches the loss as teacher indices.
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["domain"].dtype == torch.long and set(batch["domain"].tolist()) == {0, 1}
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        routed = torch.where(
            (batch["domain"] == 1)[:, None],
            teacher_b(input_ids=batch["input_ids"]).logits,
            teacher_a(input_ids=batch["input_ids"]).logits,
        )
        log_student = F.log_softmax(student(input_ids=batch["input_ids"]).logits / 2.0, -1)
        expected = 4.0 * F.kl_div(log_student, F.softmax(routed / 2.0, -1), reduction="batchmean")
    torch.testing.assert_close(loss, expected)
    trainer.train()
    assert all("soft_loss" in entry for entry in trainer.state.log_history if "loss" in entry)


def test_routing_every_example_to_one_teacher_is_that_teachers_run(args_factory):
    single, _ = _train(args_factory(), tiny_bert(seed=2))
    dataset = text_dataset().add_column("domain", ["b"] * 32)
    routed, _ = _train(
        args_factory(teacher_column="domain"), {"a": tiny_bert(seed=3), "b": tiny_bert(seed=2)}, dataset
    )
    for key in single:
        assert torch.equal(single[key], routed[key]), key


def test_unknown_routes_and_bad_settings_are_clear_errors(args_factory):
    dataset = text_dataset().add_column("domain", ["news"] * 31 + ["sports"])
    trainer = DistillationTrainer(
        tiny_bert(),
        args_factory(teacher_column="domain", per_device_train_batch_size=32),
        train_dataset=dataset,
        teacher_model={"news": tiny_bert(seed=2), "code": tiny_bert(seed=3)},
    )
    with pytest.raises(ValueError, match=r"'sports', which names none of the teachers \['news', 'code'\]"):
        trainer.train()
    teachers = [tiny_bert(seed=2), tiny_bert(seed=3)]
    with pytest.raises(ValueError, match="3 values for 2 teachers"):
        DistillationTrainer(tiny_bert(), args_factory(teacher_weights=[1, 1, 1]), teacher_model=teachers)
    with pytest.raises(ValueError, match="must be exactly the teachers'"):
        DistillationTrainer(tiny_bert(), args_factory(teacher_weights={"a": 1}), teacher_model=teachers)
    with pytest.raises(ValueError, match="apply to several teachers"):
        DistillationTrainer(tiny_bert(), args_factory(teacher_weights=[1.0]), teacher_model=tiny_bert(seed=2))
    with pytest.raises(ValueError, match="'mse' compares raw logits"):
        DistillationTrainer(tiny_bert(), args_factory(distillation_loss="mse"), teacher_model=teachers)
    with pytest.raises(ValueError, match="empty"):
        DistillationTrainer(tiny_bert(), args_factory(), teacher_model=[])


def test_each_teacher_is_checked_and_frozen(args_factory, tmp_path):
    student = tiny_bert(seed=1)
    sharing = tiny_bert(seed=2)
    sharing.classifier = student.classifier
    with pytest.raises(ValueError, match="shares 2 parameter"):
        DistillationTrainer(student, args_factory(), teacher_model=[tiny_bert(seed=2), sharing])
    with pytest.raises(ValueError, match="student itself"):
        DistillationTrainer(student, args_factory(), teacher_model=[tiny_bert(seed=2), student])
    # A teacher may be given by path, like a single one.
    tiny_bert(seed=3).save_pretrained(tmp_path / "saved")
    trainer = DistillationTrainer(
        student,
        args_factory(),
        train_dataset=text_dataset(),
        teacher_model=[tiny_bert(seed=2), str(tmp_path / "saved")],
    )
    trainer.train()
    for teacher in trainer.teacher_model.teachers.values():
        assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    metrics = trainer.evaluate(text_dataset(n=8))
    assert {"eval_teacher_accuracy", "eval_teacher_agreement"} <= set(metrics)


def test_feature_terms_reach_a_teacher_of_the_ensemble_by_its_key(args_factory):
    layer = "bert.encoder.layer.1"
    teachers = {"small": tiny_bert(seed=2), "deep": tiny_bert(seed=3, layers=3)}
    term = FeatureTerm(layer, f"teachers.deep.{layer}", "l2")
    trainer = DistillationTrainer(
        tiny_bert(seed=1),
        args_factory(),
        train_dataset=text_dataset(),
        teacher_model=teachers,
        extra_loss_terms=[term],
    )
    trainer.train()
    assert all(f"l2_{layer}_loss" in entry for entry in trainer.state.log_history if "loss" in entry)
    with pytest.raises(ValueError, match=r"closest are \['teachers.deep.bert.encoder.layer.1'"):
        DistillationTrainer(
            tiny_bert(), args_factory(), teacher_model=teachers, extra_loss_terms=[FeatureTerm(layer, f"deep.{layer}")]
        )
    with pytest.raises(ValueError, match="each teacher sees only its examples"):
        DistillationTrainer(
            tiny_bert(), args_factory(teacher_column="domain"), teacher_model=teachers, extra_loss_terms=[term]
        )
