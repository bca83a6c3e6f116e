"""Model cost on this machine: parameters, size on disk, latency per example (batch 1) and batched throughput."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils import benchmark as torch_benchmark

from ..modeling import count_parameters


@dataclass
class BenchmarkResult:
    """Cost of one model.

    Attributes:
        parameters: number of parameters (shared tensors counted once).
        size_mb: size of the weights saved as safetensors, in MB (10⁶ bytes).
        latency_ms: median time of one forward pass on a batch of 1, in milliseconds (`torch.utils.benchmark`).
        throughput_per_s: examples per second for forward passes on batches of `batch_size`.
        batch_size: the batch size used for `throughput_per_s`.
        device: where it ran, e.g. `"cpu (2 threads)"`.
    """

    parameters: int
    size_mb: float
    latency_ms: float
    throughput_per_s: float
    batch_size: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_description(device: torch.device | str = "cpu") -> str:
    """`"cpu (N threads)"` or the CUDA device name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def size_on_disk_mb(model: nn.Module) -> float:
    """Size in MB (10⁶ bytes) of `model.state_dict()` written as a safetensors file."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    seen: dict[int, str] = {}
    for key in list(state):  # safetensors refuses shared storage: keep one copy, as `save_model` does
        ptr = state[key].data_ptr()
        if ptr in seen and state[key].numel() > 0:
            state[key] = state[key].clone()
        seen[ptr] = key
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_file(state, path)
        return os.path.getsize(path) / 1e6


def _forward(model: nn.Module, inputs: Any) -> Any:
    """Call `model` on a tensor or on a dict of keyword tensors."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs.to(device)


def time_forward(model: nn.Module, inputs: Any, warmup: int = 3, min_time_s: float = 0.2) -> float:
    """Median time in seconds of one `model(inputs)` under `torch.inference_mode`, by `torch.utils.benchmark`.

    After `warmup` untimed calls, `Timer.blocked_autorange` times blocks of calls (synchronising CUDA around each
    block) until they add up to `min_time_s`, with PyTorch's current number of CPU threads (the `Timer` would
    otherwise run on one); the median over blocks of the time per call is returned.
    """

    def forward() -> None:
        with torch.inference_mode():
            _forward(model, inputs)

    for _ in range(warmup):
        forward()
    timer = torch_benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time_s).median


def benchmark_model(
    model: nn.Module,
    make_inputs: Callable[[int], Any],
    batch_size: int = 64,
    warmup: int = 3,
    min_time_s: float = 0.5,
) -> BenchmarkResult:
    """Measure `model` on its current device, in eval mode (the mode is restored afterwards).

    Args:
        model: any module called as `model(x)` or `model(**x)`.
        make_inputs: `n -> inputs for a batch of n examples`: a tensor (e.g. (n, 3, 32, 32) pixels) or a dict
            of tensors (e.g. `input_ids` and `attention_mask` of shape (n, L)).
        batch_size: batch for the throughput measurement.
        warmup: untimed calls before each measurement.
        min_time_s: time of the timed calls of each measurement (see `time_forward`, `torch.utils.benchmark`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        latency = time_forward(model, _to_device(make_inputs(1), device), warmup, min_time_s)
        batched = time_forward(model, _to_device(make_inputs(batch_size), device), warmup, min_time_s)
    finally:
        model.train(was_training)
    return BenchmarkResult(
        parameters=count_parameters(model),
        size_mb=size_on_disk_mb(model),
        latency_ms=latency * 1e3,
        throughput_per_s=batch_size / batched,
        batch_size=batch_size,
        device=device_description(device),
    )


def image_inputs(image_size: int, channels: int = 3) -> Callable[[int], torch.Tensor]:
    """`n -> random pixels (n, channels, image_size, image_size)`: timing needs shapes, not real images."""
    return lambda n: torch.randn(n, channels, image_size, image_size)
