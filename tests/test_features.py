"""Intermediate outputs by module path (hooks on timm and transformers models, wrapped or not) and the feature terms
that compare them, with their projections trained, checkpointed and resumed beside the student."""

import os
import re
from types import MethodType

import pytest
import timm
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, LlamaConfig, LlamaForCausalLM, TrainerCallback

from hf_distill import DistillationTrainer, FeatureRecorder, FeatureTerm
from hf_distill.losses import attention_transfer_loss, rkd_angle_loss, rkd_distance_loss, similarity_preserving_loss
from hf_distill.projectors import PROJECTORS_NAME
from tests.conftest import NUM_LABELS, VOCAB_SIZE, TinyCNN, image_dataset, text_dataset, tiny_bert

BERT_LAYER = "bert.encoder.layer.1"


def _resnet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=NUM_LABELS)


def _wide_bert(seed: int = 2, hidden_size: int = 24) -> BertForSequenceClassification:
    """A teacher wider than `tiny_bert` (16), so that hints need a projection."""
    return tiny_bert(seed=seed, hidden_size=hidden_size)


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _batch(dataset, n: int = 8) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(value) for key, value in dataset[:n].items()}


def _hooks(model: torch.nn.Module) -> int:
    """The number of `FeatureRecorder` hooks on the model (transformers adds hooks of its own)."""
    return sum(
        isinstance(getattr(hook, "func", None), MethodType) and isinstance(hook.func.__self__, FeatureRecorder)
        for module in model.modules()
        for hook in module._forward_hooks.values()
    )


# ---- Hooks ----


@pytest.mark.parametrize("name, shape", [("layer3", (4, 192, 2, 2)), ("layer1", (4, 32, 8, 8))])
def test_recorder_captures_timm_modules_and_removes_its_hooks(name, shape):
    model = _resnet()
    with FeatureRecorder(model, [name]) as recorder:
        logits = model(_images())
        assert tuple(recorder.features[name].shape) == shape
        assert recorder.features[name].requires_grad
    assert logits.shape == (4, NUM_LABELS)
    assert _hooks(model) == 0 and name in recorder.features  # kept until cleared
    recorder.clear()
    assert recorder.features == {}


def test_recorder_reaches_timm_stages_by_path():
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False, num_classes=NUM_LABELS)
    with FeatureRecorder(model, ["stages.2"]) as recorder:
        model(_images())
    assert recorder.features["stages.2"].dim() == 4


def test_recorder_through_torch_compile_resolves_names_on_the_unwrapped_model():
    model = _resnet()
    compiled = torch.compile(model, backend="eager")
    with FeatureRecorder(compiled, ["layer3", "_orig_mod.layer2"]) as recorder:
        compiled(_images())
    with FeatureRecorder(model, ["layer3"]) as plain:
        model(_images())
    torch.testing.assert_close(recorder.features["layer3"], plain.features["layer3"])
    assert recorder.features["_orig_mod.layer2"].shape[1] == 48


def test_transformers_layers_give_their_hidden_states():
    """A transformers layer's output (a tuple, or a tensor) is recorded as its hidden states (B, L, H)."""
    bert = tiny_bert()
    input_ids = torch.randint(0, VOCAB_SIZE, (2, 6), generator=torch.Generator().manual_seed(0))
    with FeatureRecorder(bert, [BERT_LAYER]) as recorder:
        hidden_states = bert(input_ids=input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(recorder.features[BERT_LAYER], hidden_states[2])

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    llama = LlamaForCausalLM(config)
    with FeatureRecorder(llama, ["model.layers.0"]) as recorder:
        hidden_states = llama(input_ids=input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(recorder.features["model.layers.0"], hidden_states[1])


def test_a_detaching_recorder_gives_constant_targets():
    model = _resnet()
    with FeatureRecorder(model, ["layer3"], detach=True) as recorder:
        model(_images())
    assert not recorder.features["layer3"].requires_grad


# ---- Errors at construction ----


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_a_wrong_module_name_fails_at_construction_with_the_closest_names(args_factory, role):
    term = FeatureTerm("layr3", "layer3", "at") if role == "student" else FeatureTerm("layer3", "layer_3", "at")
    with pytest.raises(ValueError, match=rf"The {role} \(ResNet\) has no module .*closest are \['layer3'"):
        DistillationTrainer(_resnet(1), args_factory(), teacher_model=_resnet(2), extra_loss_terms=[term])


def test_shapes_no_projection_reconciles_fail_at_construction_naming_both(args_factory):
    dataset = Dataset.from_dict({"pixel_values": _images(4).tolist(), "labels": [0, 1, 2, 0]}).with_format("torch")
    at = FeatureTerm("layer2", "layer3", "at")  # 32x32 images: layer2 is 4x4, layer3 2x2
    with pytest.raises(ValueError, match=r"\(2, 48, 4, 4\).*\(2, 192, 2, 2\).*same B, H and W"):
        DistillationTrainer(
            _resnet(1), args_factory(), train_dataset=dataset, teacher_model=_resnet(2), extra_loss_terms=[at]
        )
    hint = FeatureTerm("layer3", "fc", "l2")
    with pytest.raises(ValueError, match=r"\(2, 192, 2, 2\).*\(2, 3\)"):
        DistillationTrainer(
            _resnet(1), args_factory(), train_dataset=dataset, teacher_model=_resnet(2), extra_loss_terms=[hint]
        )


@pytest.mark.parametrize(
    "loss, student, teacher, message",
    [
        ("sp", (4, 8), (3, 8), "same batch size B"),
        ("at", (2, 8, 4, 4), (2, 8, 2, 2), "same B, H and W"),
        ("l2", (2, 6, 16), (2, 7, 24), "equal in all but the width"),
        ("l1", (2, 16), (2, 24, 1, 1), "equal in all but the width"),
    ],
)
def test_feature_term_setup_names_both_shapes_it_cannot_reconcile(loss, student, teacher, message):
    term = FeatureTerm("s", "t", loss)
    with pytest.raises(ValueError, match=f"{loss}_s.*{re.escape(str(student))}.*{re.escape(str(teacher))}.*{message}"):
        term.setup({"s": torch.zeros(student)}, {"t": torch.zeros(teacher)})


def test_feature_term_projection_only_where_a_hint_needs_one():
    maps, vectors = torch.zeros(2, 8, 4, 4), torch.zeros(2, 5, 16)
    assert isinstance(FeatureTerm("s", "t", "l2").setup({"s": maps}, {"t": torch.zeros(2, 12, 4, 4)}), torch.nn.Conv2d)
    assert isinstance(
        FeatureTerm("s", "t", "mmd").setup({"s": vectors}, {"t": torch.zeros(2, 5, 24)}), torch.nn.Linear
    )
    assert FeatureTerm("s", "t", "l2").setup({"s": vectors}, {"t": vectors}) is None
    assert FeatureTerm("s", "t", "rkd_angle").setup({"s": vectors}, {"t": torch.zeros(2, 3)}) is None
    with pytest.raises(ValueError, match=r"Unknown feature loss 'fitnet'; choose one of \['l2', 'l1'"):
        FeatureTerm("s", "t", "fitnet")


def test_feature_terms_need_a_live_teacher(args_factory):
    with pytest.raises(ValueError, match="no live teacher"):
        DistillationTrainer(tiny_bert(), args_factory(), extra_loss_terms=[FeatureTerm(BERT_LAYER, BERT_LAYER)])


# ---- Terms ----


def test_hint_with_projection_equals_the_formula_and_trains_student_and_projection_only(args_factory):
    student, teacher = tiny_bert(seed=1), _wide_bert()
    term = FeatureTerm(BERT_LAYER, BERT_LAYER, "l2", weight=3.0)
    trainer = DistillationTrainer(
        student, args_factory(alpha=0.0), train_dataset=text_dataset(), teacher_model=teacher, extra_loss_terms=[term]
    )
    projection = trainer.projectors[f"l2_{BERT_LAYER}".replace(".", "_")]
    assert isinstance(projection, torch.nn.Linear) and projection.weight.shape == (24, 16)
    batch = _batch(text_dataset())
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][:, 5:] = 0
    loss = trainer.compute_loss(student, batch)
    loss.backward()

    with torch.no_grad():
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        s = student(**kwargs, output_hidden_states=True)
        t = teacher(**kwargs, output_hidden_states=True)
        tokens = batch["attention_mask"].bool()
        hint = F.mse_loss(projection(s.hidden_states[2][tokens]), t.hidden_states[2][tokens])
        expected = F.cross_entropy(s.logits, batch["labels"]) + 3.0 * hint
    torch.testing.assert_close(loss.detach(), expected)
    assert all(p.grad is not None for p in student.bert.encoder.layer[1].parameters())
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert _hooks(student) == _hooks(teacher) == 0


def test_attention_and_relation_terms_equal_their_losses_and_combine(args_factory):
    student, teacher = _resnet(1), _resnet(2)
    terms = [
        FeatureTerm("layer3", "layer3", "at", weight=1000.0),
        FeatureTerm("layer4", "layer3", "sp", weight=3000.0),
        FeatureTerm("layer4", "layer4", "rkd_distance", weight=25.0),
        FeatureTerm("layer4", "layer4", "rkd_angle", weight=50.0),
    ]
    trainer = DistillationTrainer(
        student, args_factory(alpha=0.5, temperature=4.0), teacher_model=teacher, extra_loss_terms=terms
    )
    assert trainer.projectors is None  # none of these needs one
    images, labels = _images(), torch.tensor([0, 1, 2, 0])
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, {"pixel_values": images, "labels": labels})
        features = {}
        for role, model in (("s", student), ("t", teacher)):
            with FeatureRecorder(model, ["layer3", "layer4"]) as recorder:
                features[role + "_logits"] = model(images)
            features.update({f"{role}_{k}": v for k, v in recorder.features.items()})
        soft = F.kl_div(
            F.log_softmax(features["s_logits"] / 4, -1), F.softmax(features["t_logits"] / 4, -1), reduction="batchmean"
        )
        expected = (
            0.5 * 16 * soft
            + 0.5 * F.cross_entropy(features["s_logits"], labels)
            + 1000 * attention_transfer_loss(features["s_layer3"], features["t_layer3"])
            + 3000 * similarity_preserving_loss(features["s_layer4"], features["t_layer3"])
            + 25 * rkd_distance_loss(features["s_layer4"], features["t_layer4"])
            + 50 * rkd_angle_loss(features["s_layer4"], features["t_layer4"])
        )
    torch.testing.assert_close(loss, expected)


def test_feature_maps_of_other_widths_get_a_1x1_conv_projection(args_factory):
    student, teacher = TinyCNN(width=4, seed=1), TinyCNN(width=8, seed=2)
    term = FeatureTerm("features.0", "features.0", "cosine", name="hint")
    trainer = DistillationTrainer(
        student,
        args_factory(max_steps=2),
        train_dataset=image_dataset(),
        teacher_model=teacher,
        extra_loss_terms=[term],
    )
    projection = trainer.projectors["hint"]
    assert isinstance(projection, torch.nn.Conv2d) and projection.kernel_size == (1, 1)
    assert (projection.in_channels, projection.out_channels) == (4, 8)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all("hint_loss" in entry for entry in logs)


# ---- Lifetime of hooks ----


class _Fail(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise RuntimeError("stop")


def test_hooks_live_only_while_the_trainer_runs_the_models(args_factory):
    student, teacher = tiny_bert(seed=1), _wide_bert()
    trainer = DistillationTrainer(
        student,
        args_factory(max_steps=2, eval_strategy="steps", eval_steps=1),
        train_dataset=text_dataset(),
        eval_dataset=text_dataset(n=8),
        teacher_model=teacher,
        extra_loss_terms=[FeatureTerm(BERT_LAYER, BERT_LAYER)],
    )
    assert _hooks(student) == _hooks(teacher) == 0
    seen = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append((_hooks(student), _hooks(teacher)))

    trainer.add_callback(Watch())
    trainer.train()
    assert seen == [(1, 1), (1, 1)]
    assert _hooks(student) == _hooks(teacher) == 0
    metrics = trainer.evaluate()
    assert f"eval_l2_{BERT_LAYER}_loss" in metrics and _hooks(student) == _hooks(teacher) == 0
    trainer.add_callback(_Fail())
    with pytest.raises(RuntimeError, match="stop"):
        trainer.train()
    assert _hooks(student) == _hooks(teacher) == 0


# ---- Projections: optimizer, checkpoints, resume, saved student ----


def _state(module):
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def test_projections_train_are_checkpointed_and_resume_exactly_but_never_join_the_student(args_factory, tmp_path):
    def make(args):
        return DistillationTrainer(
            tiny_bert(seed=1),
            args,
            train_dataset=text_dataset(n=32),
            teacher_model=_wide_bert(),
            extra_loss_terms=[FeatureTerm(BERT_LAYER, BERT_LAYER, "l2", weight=2.0)],
        )

    args = args_factory(max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=3)
    trainer = make(args)
    initial = _state(trainer.projectors)
    trainer.train()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in trainer.projectors.parameters()} <= optimized
    assert any(not torch.equal(initial[k], v) for k, v in _state(trainer.projectors).items())
    uninterrupted = (_state(trainer.model), _state(trainer.projectors))

    checkpoint = os.path.join(args.output_dir, "checkpoint-3")
    projector_keys = set(load_file(os.path.join(checkpoint, PROJECTORS_NAME)))
    assert projector_keys == {f"l2_{BERT_LAYER}".replace(".", "_") + s for s in (".weight", ".bias")}
    resumed = make(args)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.state.global_step == 6
    for expected, actual in zip(uninterrupted, (_state(resumed.model), _state(resumed.projectors)), strict=True):
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=0, msg=key)

    resumed.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "final", tmp_path / "out" / "checkpoint-6"):
        assert set(load_file(str(folder / "model.safetensors"))) == set(tiny_bert().state_dict())
    assert not (tmp_path / "final" / PROJECTORS_NAME).exists()


def test_feature_terms_see_the_student_through_the_trainers_torch_compile(args_factory):
    """The Trainer compiles the student (`torch_compile=True`) after the hooks are on: same features, same losses."""
    losses = []
    for compile_options in ({}, {"torch_compile": True, "torch_compile_backend": "eager"}):
        trainer = DistillationTrainer(
            tiny_bert(seed=1),
            args_factory(**compile_options),
            train_dataset=text_dataset(),
            teacher_model=_wide_bert(),
            extra_loss_terms=[FeatureTerm(BERT_LAYER, BERT_LAYER)],
        )
        trainer.train()
        losses.append([entry[f"l2_{BERT_LAYER}_loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert type(trainer.model_wrapped).__name__ == "OptimizedModule"
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_gradient_accumulation_of_a_hint_and_its_projection_matches_the_larger_batch(args_factory):
    """The projection's gradients add up over micro-batches and are zeroed once per optimizer step."""
    states = []
    for batch_size, accumulation in ((16, 1), (4, 4)):
        args = args_factory(
            max_steps=2,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.1,
        )
        trainer = DistillationTrainer(
            tiny_bert(seed=1),
            args,
            train_dataset=text_dataset(n=32),
            teacher_model=_wide_bert(),
            extra_loss_terms=[FeatureTerm(BERT_LAYER, BERT_LAYER, "l2")],
        )
        trainer.train()
        states.append({**_state(trainer.model), **_state(trainer.projectors)})
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], atol=1e-5, rtol=1e-5, msg=key)
