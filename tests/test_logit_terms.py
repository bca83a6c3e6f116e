"""The teacher term chosen by `distillation_method` (KD, DKD, DIST) and logit standardization, in the trainer."""

import pytest
import torch
import torch.nn.functional as F

from hf_distill import DistillationTrainer, DistillationTrainingArguments, DISTTerm, DKDTerm, FeatureTerm
from hf_distill.losses import dist_loss, dkd_loss, standardize_logits
from hf_distill.terms import SoftTargetTerm
from tests.conftest import lm_dataset, text_dataset, tiny_bert, tiny_gpt2


def _batch(dataset, n=8):
    return {key: torch.as_tensor(value) for key, value in dataset[:n].items()}


def _logits(student, teacher, batch):
    with torch.no_grad():
        return student(input_ids=batch["input_ids"]).logits, teacher(input_ids=batch["input_ids"]).logits


def test_distillation_method_picks_the_teacher_term(args_factory):
    for method, kind, name in (("kd", SoftTargetTerm, "soft"), ("dkd", DKDTerm, "dkd"), ("dist", DISTTerm, "dist")):
        trainer = DistillationTrainer(tiny_bert(), args_factory(distillation_method=method), teacher_model=tiny_bert())
        assert isinstance(trainer.loss_terms[0], kind) and trainer.loss_terms[0].name == name
        assert trainer.loss_terms[1].name == "hard"


def test_dkd_with_its_warm_up_and_the_hard_term(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    args = args_factory(
        alpha=0.6, temperature=4.0, distillation_method="dkd", dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup_steps=4
    )
    trainer = DistillationTrainer(student, args, teacher_model=teacher)
    batch = _batch(text_dataset())
    s, t = _logits(student, teacher, batch)
    dkd = dkd_loss(s, t, batch["labels"], 1.0, 8.0, 4.0)
    hard = F.cross_entropy(s, batch["labels"])
    # Training step k (counted from 1) weighs DKD by min(k / 4, 1); evaluation by the steps completed.
    for global_step, training, factor in ((0, True, 0.25), (2, True, 0.75), (5, True, 1.0), (2, False, 0.5)):
        trainer.state.global_step = global_step
        student.train(training)
        with torch.no_grad():
            loss = trainer.compute_loss(student, batch)
        torch.testing.assert_close(loss, 0.6 * factor * dkd + 0.4 * hard)


def test_dkd_counts_labelled_tokens_only(args_factory):
    student, teacher = tiny_gpt2(seed=1), tiny_gpt2(seed=2)
    trainer = DistillationTrainer(
        student, args_factory(alpha=1.0, temperature=2.0, distillation_method="dkd"), teacher_model=teacher
    )
    batch = _batch(lm_dataset())
    s, t = _logits(student, teacher, batch)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
    torch.testing.assert_close(loss, dkd_loss(s[:, :-1][mask], t[:, :-1][mask], labels[mask], 1.0, 8.0, 2.0))


def test_dist_and_its_weights(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    args = args_factory(alpha=0.7, temperature=4.0, distillation_method="dist", dist_beta=2.0, dist_gamma=0.5)
    trainer = DistillationTrainer(student, args, teacher_model=teacher)
    batch = _batch(text_dataset())
    s, t = _logits(student, teacher, batch)
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
    expected = 0.7 * dist_loss(s, t, 2.0, 0.5, 4.0) + 0.3 * F.cross_entropy(s, batch["labels"])
    torch.testing.assert_close(loss, expected)


def test_logit_standardization_z_scores_both_logits_before_the_divergence(args_factory):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    args = args_factory(alpha=0.9, temperature=2.0, logit_standardization=True)
    trainer = DistillationTrainer(student, args, teacher_model=teacher)
    batch = _batch(text_dataset())
    s, t = _logits(student, teacher, batch)
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
    # The authors' kd_loss: KL of the standardised logits at T, times T².
    zs, zt = standardize_logits(s), standardize_logits(t)
    soft = F.kl_div(F.log_softmax(zs / 2.0, 1), F.softmax(zt / 2.0, 1), reduction="none").sum(1).mean() * 4.0
    torch.testing.assert_close(loss, 0.9 * soft + 0.1 * F.cross_entropy(s, batch["labels"]))
    # Invariant to shifting and scaling the teacher's logits, unlike plain KD.
    scaled = tiny_bert(seed=2)
    scaled.classifier.weight.data *= 3.0
    scaled.classifier.bias.data = scaled.classifier.bias.data * 3.0 + 1.0
    other = DistillationTrainer(student, args, teacher_model=scaled)
    with torch.no_grad():
        torch.testing.assert_close(other.compute_loss(student, batch), loss)


def test_methods_combine_with_feature_terms_and_train(args_factory):
    terms = [FeatureTerm("bert.encoder.layer.1", "bert.encoder.layer.1", "sp", weight=10.0)]
    args = args_factory(distillation_method="dkd", dkd_warmup_steps=2, logit_standardization=True)
    trainer = DistillationTrainer(
        tiny_bert(seed=1), args, train_dataset=text_dataset(), teacher_model=tiny_bert(seed=2), extra_loss_terms=terms
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert {"dkd_loss", "hard_loss", "sp_bert.encoder.layer.1_loss"} <= set(entry)
        expected = 0.7 * entry["dkd_loss"] + 0.3 * entry["hard_loss"] + 10.0 * entry["sp_bert.encoder.layer.1_loss"]
        assert entry["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"distillation_method": "crd"}, "distillation_method"),
        ({"dkd_beta": -1.0}, "dkd_beta"),
        ({"dist_gamma": float("nan")}, "dist_gamma"),
        ({"dkd_warmup_steps": -1}, "dkd_warmup_steps"),
        ({"teacher_weights": "[1, "}, "teacher_weights"),
        ({"teacher_column": ""}, "teacher_column"),
        ({"teacher_column": "domain", "teacher_weights": [1, 1]}, "teacher_column"),
    ],
)
def test_bad_method_and_teacher_settings_raise_naming_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        DistillationTrainingArguments(output_dir=str(tmp_path), **overrides)
