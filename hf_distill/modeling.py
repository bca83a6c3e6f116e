"""Calling teachers and students of any family (transformers, timm, plain PyTorch) on a batch dict."""

from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

# Batch keys a plain `nn.Module` (e.g. a timm model) may take as its single positional input, in order of preference.
PLAIN_MODULE_INPUT_KEYS = ("pixel_values", "input_ids", "input_values", "inputs")
# A dataset column of precomputed teacher logits, used instead of running the teacher.
CACHED_TEACHER_LOGITS_KEY = "teacher_logits"
# Dataset columns of a top-k teacher cache: the log-probabilities of the k most likely classes and their class ids.
CACHED_TEACHER_TOPK_VALUES_KEY = "teacher_topk_values"
CACHED_TEACHER_TOPK_INDICES_KEY = "teacher_topk_indices"
# A cache's hash of the input columns of each row, checked against the rows the trainer is given.
TEACHER_INPUT_HASH_KEY = "teacher_input_hash"
CACHED_TEACHER_OUTPUT_KEYS = (
    CACHED_TEACHER_LOGITS_KEY,
    CACHED_TEACHER_TOPK_VALUES_KEY,
    CACHED_TEACHER_TOPK_INDICES_KEY,
)
CACHED_TEACHER_KEYS = (*CACHED_TEACHER_OUTPUT_KEYS, TEACHER_INPUT_HASH_KEY)
# Batch keys that are targets, never model inputs.
TARGET_KEYS = ("labels", "label", "label_ids", *CACHED_TEACHER_KEYS)


def is_transformers_model(model: nn.Module) -> bool:
    """True for a transformers `PreTrainedModel`, also when wrapped by DDP, DeepSpeed or `torch.compile`."""
    return isinstance(extract_model_from_parallel(model), PreTrainedModel)


def is_causal_lm(model: nn.Module) -> bool:
    """True for a decoder-only transformers LM, whose logits at position i predict the token at i + 1."""
    model = extract_model_from_parallel(model)
    if not isinstance(model, PreTrainedModel) or getattr(model.config, "is_encoder_decoder", False):
        return False
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def logits_from_output(output: Any) -> Tensor:
    """The logits of a model output: a tensor itself, `output.logits`, `output["logits"]`, or its first element."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        if "logits" not in output:
            raise ValueError(f"The model output has no 'logits', only {list(output.keys())}.")
        return output["logits"]
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ValueError(f"Cannot find logits in a model output of type {type(output).__name__}.")


def forward_model(model: nn.Module, inputs: dict[str, Any], output_hidden_states: bool = False) -> tuple[Tensor, Any]:
    """Run `model` on a batch dict and return `(logits, raw_output)`.

    A transformers model gets the batch as keyword arguments (targets removed); any other module, such as a timm
    model, gets the first of :data:`PLAIN_MODULE_INPUT_KEYS` found in the batch as its single positional input.
    """
    if is_transformers_model(model):
        kwargs = {key: value for key, value in inputs.items() if key not in TARGET_KEYS}
        if output_hidden_states:
            kwargs["output_hidden_states"] = True
        output = model(**kwargs)
    else:
        if output_hidden_states:
            raise ValueError(
                f"{type(extract_model_from_parallel(model)).__name__} is not a transformers model and cannot return "
                "hidden_states; loss terms on hidden states need transformers models."
            )
        key = next((key for key in PLAIN_MODULE_INPUT_KEYS if key in inputs), None)
        if key is None:
            raise ValueError(
                f"The batch has none of the input keys {list(PLAIN_MODULE_INPUT_KEYS)} that a plain nn.Module "
                f"(such as a timm model) is called with; it has {sorted(inputs)}."
            )
        output = model(inputs[key])
    return logits_from_output(output), output


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of `model` (`parameters()` yields a tensor shared by several modules once)."""
    return sum(parameter.numel() for parameter in model.parameters())


def parameter_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the first floating-point parameter of `model`, or `None` if it has none."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def is_channels_last(model: nn.Module) -> bool:
    """True when the first 4-D (convolution) weight of `model` is stored channels-last (`teacher_channels_last`)."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return (
        weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    )


@torch.no_grad()
def teacher_forward(
    teacher: nn.Module, inputs: dict[str, Any], output_hidden_states: bool = False
) -> tuple[Tensor, Any]:
    """`forward_model` for a frozen teacher: no autograd graph is built.

    Floating-point inputs (pixel values, embeddings) are cast to the teacher's dtype when it runs in another precision
    than they come in (`teacher_dtype`); integer inputs such as token ids are passed as they are. A teacher stored
    channels-last (`teacher_channels_last`) gets its 4-D float inputs (images) channels-last too.
    """
    dtype = parameter_dtype(teacher)
    if dtype is not None:
        inputs = {
            key: value.to(dtype) if isinstance(value, Tensor) and value.is_floating_point() else value
            for key, value in inputs.items()
        }
    if is_channels_last(teacher):
        inputs = {
            key: value.contiguous(memory_format=torch.channels_last)
            if isinstance(value, Tensor) and value.is_floating_point() and value.dim() == 4
            else value
            for key, value in inputs.items()
        }
    return forward_model(teacher, inputs, output_hidden_states)
