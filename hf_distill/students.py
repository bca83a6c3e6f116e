"""Build a shallower student from a transformers teacher by copying a subset of its layers (DistilBERT init)."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

# model_type -> dotted path (relative to the base model) of the ModuleList holding the transformer blocks.
_LAYER_LISTS: dict[str, str] = {
    "bert": "encoder.layer",
    "roberta": "encoder.layer",
    "xlm-roberta": "encoder.layer",
    "camembert": "encoder.layer",
    "electra": "encoder.layer",
    "distilbert": "transformer.layer",
    "gpt2": "h",
    "llama": "layers",
    "mistral": "layers",
    "qwen2": "layers",
}

# Config fields that hold one entry per layer and must follow the selected layers.
_PER_LAYER_CONFIG_FIELDS: tuple[str, ...] = ("layer_types",)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_LAYER_LISTS))


def every_other_layer(num_layers: int) -> list[int]:
    """Teacher layers DistilBERT keeps: ``[0, 2, 4, ...]`` (``ceil(num_layers / 2)`` layers).

    Args:
        num_layers: depth of the teacher, ``> 0``.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}.")
    return list(range(0, num_layers, 2))


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Validate a layer selection against the teacher depth and return it as a list."""
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one teacher layer, got an empty list.")
    for index in layers:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"layers must be integers, got {index!r} in {layers}.")
        if not 0 <= index < num_layers:
            raise ValueError(
                f"layer index {index} is out of range for a teacher with {num_layers} layers "
                f"(valid: 0..{num_layers - 1})."
            )
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise ValueError(f"layers must be strictly increasing (each teacher layer used once, in order), got {layers}.")
    return layers


def _layer_list_prefix(model: torch.nn.Module, suffix: str, num_layers: int) -> str:
    """State-dict prefix of the layer ModuleList, e.g. ``"bert.encoder.layer"`` in a ``BertForMaskedLM``."""
    found = [
        name
        for name, module in model.named_modules()
        if (name == suffix or name.endswith("." + suffix)) and isinstance(module, torch.nn.ModuleList)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one layer list named '*{suffix}' in {type(model).__name__}, found {found}.")
    if len(model.get_submodule(found[0])) != num_layers:
        raise ValueError(
            f"{found[0]} holds {len(model.get_submodule(found[0]))} layers but the config says {num_layers}."
        )
    return found[0]


def student_config_from_teacher(teacher_config, layers: Sequence[int] | None = None):
    """Copy of ``teacher_config`` describing a student made of the teacher layers ``layers``.

    The depth field is set through ``num_hidden_layers`` (which transformers maps to ``n_layer`` for GPT-2 and
    ``n_layers`` for DistilBERT); per-layer fields such as ``layer_types`` are subset to the chosen layers. The
    student config records ``distillation_teacher_layers`` (the teacher index of each student layer) and
    ``distillation_teacher`` (the teacher's ``name_or_path``); both are saved in ``config.json``.

    Args:
        teacher_config: a ``PretrainedConfig`` whose ``model_type`` is one of ``SUPPORTED_MODEL_TYPES``.
        layers: strictly increasing teacher layer indices; ``None`` keeps every other layer, as DistilBERT did.

    Raises:
        ValueError: unsupported ``model_type``, or an empty, unordered or out-of-range layer list.
    """
    model_type = getattr(teacher_config, "model_type", None)
    if model_type not in _LAYER_LISTS:
        raise ValueError(
            f"cannot map a student from model_type {model_type!r}: supported model types are "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    num_layers = teacher_config.num_hidden_layers
    layers = every_other_layer(num_layers) if layers is None else _check_layers(layers, num_layers)
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = len(layers)
    for field in _PER_LAYER_CONFIG_FIELDS:
        values = getattr(config, field, None)
        if isinstance(values, (list, tuple)) and len(values) == num_layers:
            setattr(config, field, [values[i] for i in layers])
    config.distillation_teacher_layers = list(layers)
    config.distillation_teacher = getattr(teacher_config, "_name_or_path", "") or None
    return config


def student_from_teacher(teacher: PreTrainedModel, layers: Sequence[int] | None = None) -> PreTrainedModel:
    """A shallower model of the teacher's class initialised from a subset of its layers (Sanh et al., 2019).

    The student has the same class, embeddings and heads as the teacher and ``len(layers)`` transformer blocks;
    student block ``j`` is a copy of teacher block ``layers[j]``. Every other weight (embeddings, final norms,
    pooler, classification or LM heads) is copied unchanged, so a student built with all layers equals the
    teacher. DistilBERT (arXiv:1910.01108) initialised its 6-layer student from every other layer of BERT-base.

    Supported ``model_type``s: bert, roberta, xlm-roberta, camembert, electra, distilbert (encoders) and gpt2,
    llama, mistral, qwen2 (decoders). The student is built with ``type(teacher)(student_config)`` on the teacher's
    device and dtype; the teacher is not modified.

    Args:
        teacher: a transformers model of a supported ``model_type`` (any head: base, sequence classification,
            masked LM, causal LM, ...).
        layers: strictly increasing teacher layer indices to keep; ``None`` keeps ``[0, 2, 4, ...]``.

    Returns:
        The student, in train mode, whose ``config.distillation_teacher_layers`` lists the copied teacher layers.

    Raises:
        ValueError: unsupported ``model_type``, bad ``layers``, or a teacher whose weights do not map onto the
            student (this names the offending keys).
    """
    config = student_config_from_teacher(teacher.config, layers)
    layers = config.distillation_teacher_layers
    suffix = _LAYER_LISTS[config.model_type]
    teacher_prefix = _layer_list_prefix(teacher, suffix, teacher.config.num_hidden_layers)

    parameter = next(teacher.parameters())
    student = type(teacher)(config).to(device=parameter.device, dtype=parameter.dtype)
    student_prefix = _layer_list_prefix(student, suffix, len(layers))
    if student_prefix != teacher_prefix:
        raise ValueError(f"student layer list {student_prefix!r} does not match the teacher's {teacher_prefix!r}.")

    teacher_state = teacher.state_dict()
    layer_key = re.compile(rf"^{re.escape(teacher_prefix)}\.(\d+)\.(.+)$")
    mapped: dict[str, torch.Tensor] = {}
    for key in student.state_dict():
        match = layer_key.match(key)
        source = f"{teacher_prefix}.{layers[int(match.group(1))]}.{match.group(2)}" if match else key
        if source not in teacher_state:
            raise ValueError(f"student weight {key!r} has no teacher counterpart {source!r}.")
        mapped[key] = teacher_state[source]
    student.load_state_dict(mapped, strict=True)
    student.train()
    return student
