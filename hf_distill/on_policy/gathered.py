"""A model whose full weights are available for `generate`, under DeepSpeed ZeRO-3 too, as TRL's
`unwrap_model_for_generation` does it."""

import contextlib
from collections.abc import Iterator

from accelerate import Accelerator
from torch import nn


def _zero3_enabled(accelerator: Accelerator) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _zero3_offload(engine: nn.Module):
    """The ZeRO-3 parameter coordinator of a DeepSpeed engine, which holds the hooks that fetch and free shards."""
    optimizer = getattr(engine, "optimizer", None)
    if optimizer is None:
        return None
    return getattr(optimizer, "parameter_offload", optimizer)


@contextlib.contextmanager
def unwrapped_for_generation(model: nn.Module, accelerator: Accelerator) -> Iterator[nn.Module]:
    """The plain model behind `model` (DDP or DeepSpeed wrappers removed), ready for `generate`.

    Under ZeRO-3 each process holds a shard of every weight: the weights are gathered for the block
    (`deepspeed.zero.GatheredParameters`, the whole model on every process) and the engine's fetch-and-free hooks are
    taken off meanwhile and put back after, so that processes generating different numbers of tokens do not wait for
    one another. This is TRL's `unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=True)`; it
    needs the full model to fit on one device. Not run in this project's tests (no DeepSpeed on CPU).
    """
    unwrapped = accelerator.unwrap_model(model)
    if not _zero3_enabled(accelerator):
        yield unwrapped
        return
    import deepspeed

    offload = _zero3_offload(model)
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        if offload is not None:
            for parameter in offload.module.parameters(recurse=True):
                parameter.ds_active_sub_modules.clear()
            for hook in [*offload.forward_hooks, *offload.backward_hooks]:
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield unwrapped
        finally:
            if offload is not None:
                if hasattr(offload, "_register_deepspeed_module"):  # deepspeed >= 0.16.4
                    offload._register_deepspeed_module(offload.module)
                else:
                    offload._register_hooks_recursively(offload.module)
