"""Trainable parts of loss terms (FitNets' regressors): built from a first batch, trained with the student, kept in
checkpoints beside it and never in the saved student.

They are trainer state in an `nn.ModuleDict` of their own (`DistillationTrainer.projectors`), not a submodule of the
student nor of a wrapper around it: the Trainer's `self.model` must stay the user's student, since `save_model`,
`push_to_hub`, the model card, the dataset's signature columns, gradient checkpointing and PEFT all read it. So the
trainer adds them to the optimizer as a parameter group of their own, zeroes and averages their gradients itself
(DDP covers the student only), and saves them as `projectors.safetensors` in each checkpoint folder, which resuming
loads before the optimizer state (whose groups include them). The final `save_model` and the Hub repository's root
hold the plain student; a checkpoint folder pushed with `hub_strategy="checkpoint"` keeps the file, as resuming from
it needs.
"""

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# Written into each checkpoint folder next to the student's weights.
PROJECTORS_NAME = "projectors.safetensors"


def build_projectors(
    terms: Iterable[Any],
    student_features: dict[str, Tensor],
    teacher_features: dict[str, Tensor],
    accelerator: Accelerator,
) -> nn.ModuleDict | None:
    """Call each term's `setup` on the features of a first batch; the modules they return, keyed by term name (dots
    become `_`), on the accelerator's device and equal on every process; `None` when there are none.

    They are initialised with the torch RNG forked, so that the training draws the same random numbers as without.

    Raises:
        ValueError: under DeepSpeed or FSDP, which shard or wrap the student only.
    """
    modules: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        for term in terms:
            setup = getattr(term, "setup", None)
            module = setup(student_features, teacher_features) if setup is not None else None
            if module is not None:
                key = term.name.replace(".", "_")
                if key in modules:
                    raise ValueError(f"Two loss terms with projections are both named {key!r}; name them apart.")
                modules[key] = module
    if not modules:
        return None
    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise ValueError(
            "Feature terms with projections (hints between features of different widths) train parameters outside "
            "the student, which DeepSpeed and FSDP runs do not support here; compare features of equal width, or "
            "use 'at', 'sp', 'rkd_distance' or 'rkd_angle'."
        )
    projectors = nn.ModuleDict(modules).to(accelerator.device)
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        for tensor in projectors.state_dict().values():  # as DDP does for the student
            torch.distributed.broadcast(tensor, src=0)
    return projectors


def add_to_optimizer(projectors: nn.Module, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Give the projections a parameter group of their own in `optimizer`, unless it already holds them."""
    present = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    parameters = [parameter for parameter in projectors.parameters() if id(parameter) not in present]
    if parameters:
        optimizer.add_param_group({"params": parameters, "weight_decay": weight_decay})


def save_projectors(projectors: nn.Module, folder: str) -> None:
    """Write the projections' weights to `folder/projectors.safetensors`."""
    os.makedirs(folder, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in projectors.state_dict().items()}
    save_file(state, os.path.join(folder, PROJECTORS_NAME), metadata={"format": "pt"})


def load_projectors(projectors: nn.Module, folder: str) -> None:
    """Load `folder/projectors.safetensors` into the projections; a checkpoint without the file (written by a run
    without projections) leaves them as they are, with a warning."""
    path = os.path.join(folder, PROJECTORS_NAME)
    if not os.path.isfile(path):
        logger.warning(f"{folder} has no {PROJECTORS_NAME}: the feature terms' projections start from scratch.")
        return
    state = load_file(path)
    missing, unexpected = projectors.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the feature terms' projections: missing {missing}, unexpected {unexpected}. Resume "
            "with the same feature terms (and names) as the run that wrote it."
        )


def average_gradients(projectors: nn.Module, accelerator: Accelerator) -> None:
    """Average the projections' gradients over processes, as DDP does for the student's (they are outside it)."""
    if accelerator.num_processes == 1:
        return
    for parameter in projectors.parameters():
        if parameter.grad is None:  # every process must join each reduction
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")
