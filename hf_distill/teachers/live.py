"""Loading a teacher and preparing it, frozen, for whatever set-up accelerate runs (CPU, DDP, DeepSpeed, FSDP)."""

import copy
import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

_AUTO_CLASSES = (
    AutoModelForSequenceClassification,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForImageClassification,
    AutoModelForTokenClassification,
    AutoModelForSeq2SeqLM,
)


def auto_class_for(student: nn.Module) -> type:
    """The `AutoModelFor...` class whose mapping holds the student's class, to load a teacher with the same head."""
    for auto_class in _AUTO_CLASSES:
        if type(student) in auto_class._model_mapping.values():
            return auto_class
    raise ValueError(
        f"Cannot tell which head to load the teacher with for a {type(student).__name__} student; load the teacher "
        "yourself and pass the model as teacher_model."
    )


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id (`owner/name`): absolute, relative (`./`, `../`), `~`, or deeper than one."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.rstrip("/").count("/") > 1


def load_teacher(name_or_path: str, student: nn.Module, init_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Load a teacher from a Hub id or local path.

    A transformers student gets a teacher of the same task head (`AutoModelFor...from_pretrained`); any other student
    a timm teacher (`timm.create_model(name, pretrained=True)`, e.g. `"hf-hub:timm/resnet50.a1_in1k"`). A local path
    that does not exist is an error saying so, before anything is asked of the Hub.
    """
    expanded = os.path.expanduser(name_or_path)
    if _looks_like_path(name_or_path) and not os.path.isdir(expanded):
        raise FileNotFoundError(f"The teacher folder {name_or_path!r} does not exist.")
    init_kwargs = dict(init_kwargs or {})
    if isinstance(student, PreTrainedModel):
        return auto_class_for(student).from_pretrained(expanded, **init_kwargs)
    import timm

    return timm.create_model(name_or_path, pretrained=True, **init_kwargs)


def check_no_shared_parameters(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse a teacher that shares a parameter with the student: freezing the teacher would freeze the student's.

    Raises:
        ValueError: naming the shared parameters, as the teacher and the student call them.
    """
    student_names = {id(parameter): name for name, parameter in student.named_parameters(remove_duplicate=False)}
    shared = [
        f"{name} (student: {student_names[id(parameter)]})"
        for name, parameter in teacher.named_parameters(remove_duplicate=False)
        if id(parameter) in student_names
    ]
    if shared:
        listed = ", ".join(shared[:8]) + (f" and {len(shared) - 8} more" if len(shared) > 8 else "")
        raise ValueError(
            f"The teacher shares {len(shared)} parameter(s) with the student: {listed}. Freezing the teacher would "
            "freeze them in the student too; give the teacher its own copy (copy.deepcopy)."
        )


def freeze(teacher: nn.Module) -> nn.Module:
    """Put `teacher` in eval mode with no parameter requiring gradients."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _prepare_deepspeed(teacher: nn.Module, accelerator: Accelerator) -> nn.Module:
    """Wrap the teacher in an inference-only DeepSpeed engine, sharded under ZeRO-3 (as TRL does)."""
    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    config = copy.deepcopy(plugin.deepspeed_config)
    stage = config["zero_optimization"]["stage"]
    hidden_size = getattr(getattr(teacher, "config", None), "hidden_size", None)
    if stage == 3 and hidden_size is not None:
        config["zero_optimization"].update(
            {
                "reduce_bucket_size": hidden_size * hidden_size,
                "stage3_param_persistence_threshold": 10 * hidden_size,
                "stage3_prefetch_bucket_size": 0.9 * hidden_size * hidden_size,
            }
        )
    if stage != 3:
        # Without ZeRO-3 sharding there is nothing to partition: stage 0 only places the frozen teacher.
        config["zero_optimization"]["stage"] = 0
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    return freeze(engine)


def _prepare_fsdp(teacher: nn.Module, accelerator: Accelerator) -> nn.Module:
    """Shard the frozen teacher with the same FSDP plugin settings as the student (as TRL does)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) == 2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return freeze(fsdp2_prepare_model(accelerator, teacher))
    plugin.set_auto_wrap_policy(teacher)
    teacher = FullyShardedDataParallel(
        teacher,
        sharding_strategy=plugin.sharding_strategy,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        sync_module_states=plugin.sync_module_states,
        backward_prefetch=plugin.backward_prefetch,
        forward_prefetch=plugin.forward_prefetch,
        use_orig_params=plugin.use_orig_params,
        limit_all_gathers=plugin.limit_all_gathers,
        device_id=accelerator.device,
    )
    return freeze(teacher)


def _check_dtype_runs(dtype: torch.dtype, device: torch.device) -> None:
    """A clear error for a teacher precision the device cannot run."""
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"teacher_dtype='bfloat16' needs a GPU that supports it; {torch.cuda.get_device_name(device)} does not. "
            "Use teacher_dtype='float16' or 'float32'."
        )


def prepare_teacher(
    teacher: nn.Module, accelerator: Accelerator, dtype: str | None = None, channels_last: bool = False
) -> nn.Module:
    """Freeze the teacher, cast it to `dtype` if given, and place it for the accelerator's distributed set-up.
    With `channels_last`, its 4-D weights are stored channels-last, and `modeling.teacher_forward` hands it its 4-D
    inputs so too.

    The teacher is changed in place, as the Trainer does with its model: no second copy of a large model is made, so
    the object passed in is frozen, moved and (with `dtype`) cast. Pass a copy to keep the original as it was.

    Single device, several CPU processes or DDP: moved to the accelerator's device with no DDP wrapper (the teacher
    has no gradients to synchronise), under the run's autocast for mixed precision. DeepSpeed: an inference engine,
    sharded under ZeRO-3. FSDP: sharded like the student.
    """
    freeze(teacher)
    if dtype is not None:
        _check_dtype_runs(getattr(torch, dtype), accelerator.device)
        teacher.to(getattr(torch, dtype))
    if channels_last:
        if not any(parameter.dim() == 4 for parameter in teacher.parameters()):
            raise ValueError(
                f"teacher_channels_last needs a teacher with 4-D (convolution) weights; {type(teacher).__name__} has "
                "none, so it would run as it is: leave teacher_channels_last off."
            )
        teacher.to(memory_format=torch.channels_last)
    distributed_type = accelerator.distributed_type
    if distributed_type == DistributedType.DEEPSPEED:
        try:
            return _prepare_deepspeed(teacher, accelerator)
        except ImportError as error:
            raise ImportError(
                "The run uses DeepSpeed, but `deepspeed` is not installed: pip install deepspeed"
            ) from error
    if distributed_type == DistributedType.FSDP:
        return _prepare_fsdp(teacher, accelerator)
    return freeze(accelerator.prepare_model(teacher, evaluation_mode=True))
