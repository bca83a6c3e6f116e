"""Peak memory and time of one forward plus backward pass of `soft_target_loss` and `chunked_soft_target_loss` on
token-level logits with a large vocabulary.

Run from the repository root:

    python benchmarks/loss_memory.py                                  # 2 x 512 and 2 x 1024 tokens, V = 32000
    python benchmarks/loss_memory.py --shapes 2x512 --divergence jsd --chunk_size 32
    python benchmarks/loss_memory.py --dtype bfloat16 --rounds 9
    python benchmarks/loss_memory.py --path trainer --shapes 2x512     # the trainer's soft term, chunked or not
    python benchmarks/loss_memory.py --path trainer_both --shapes 2x512    # its soft and hard terms

`--path trainer` measures the loss as `DistillationTrainer.compute_loss` forms it from the models' logits: a causal-LM
batch aligned by `terms.combine.align_batch` (shift, label mask) and the `SoftTargetTerm` reduced by
`terms.combine.weighted_sum`, with `loss_chunk_size=0` (unchunked) and the default (chunked by size);
`--path trainer_both` adds the `HardLabelTerm` (Hinton's two losses, which the chunked path computes in one pass).

Memory is measured in a fresh subprocess per loss and shape, so that nothing cached by an earlier case counts, and is
given in units of one float32 logits tensor (tokens x V x 4 bytes), beyond the inputs:
- on CUDA (picked when available), `torch.cuda.max_memory_allocated`;
- on CPU, torch's own allocations as recorded by `torch.profiler` with `profile_memory=True` (exact), and, as a check,
  the growth of the process's peak resident set (what the OS saw, allocator slack included; Linux only).
"Peak" includes the student's gradient, one unit (half a unit in bfloat16), which any loss must allocate; "kept" is
what the forward pass leaves allocated for the backward pass. Times are medians over rounds that alternate the losses,
in one process; they depend on the machine and on what else runs on it, so compare them only within one run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from hf_distill.losses import chunked_soft_target_loss, soft_target_loss
from hf_distill.terms import HardLabelTerm, SoftTargetTerm
from hf_distill.terms.combine import align_batch, weighted_sum


def trainer_loss(chunk_size: int | None, hard_weight: float = 0.0):
    """The trainer's loss on causal-LM logits `(B, L, V)` whose labels are all counted (`loss_chunk_size`): the soft
    term (weight 1), and the hard term with `hard_weight` (the two then go through one chunked function)."""

    def loss(student, teacher, temperature, divergence, **_):
        labels = torch.zeros(student.shape[:-1], dtype=torch.long, device=student.device)
        batch = align_batch({}, student, teacher, labels, shift_labels=True)
        terms = [SoftTargetTerm(1.0, temperature, divergence, chunk_size=chunk_size)]
        if hard_weight:
            terms.append(HardLabelTerm(hard_weight, chunk_size=chunk_size))
        return weighted_sum(terms, batch)[0]

    return loss


PATHS = {
    "loss": {"soft_target_loss": soft_target_loss, "chunked_soft_target_loss": chunked_soft_target_loss},
    "trainer": {"SoftTargetTerm chunk=0": trainer_loss(0), "SoftTargetTerm chunk=auto": trainer_loss(None)},
    "trainer_both": {"soft + hard chunk=0": trainer_loss(0, 1.0), "soft + hard chunk=auto": trainer_loss(None, 1.0)},
}


def make_inputs(batch: int, length: int, vocab_size: int, dtype: torch.dtype, device: str):
    generator = torch.Generator(device).manual_seed(0)
    student = (torch.randn(batch, length, vocab_size, generator=generator, device=device) * 3).to(dtype)
    teacher = (torch.randn(batch, length, vocab_size, generator=generator, device=device) * 3).to(dtype)
    return student.requires_grad_(), teacher


def loss_call(name: str, student, teacher, args):
    kwargs = {"chunk_size": args.chunk_size} if name == "chunked_soft_target_loss" else {}
    return PATHS[args.path][name](student, teacher, args.temperature, args.divergence, **kwargs)


# ---- Memory, in a subprocess of its own ----


def profiled_bytes(fn) -> tuple[int, int]:
    """(peak, final) of the bytes torch allocates on the CPU while `fn` runs, relative to its start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak, running


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def measure_memory(name: str, batch: int, length: int, args) -> dict[str, float]:
    student, teacher = make_inputs(batch, length, args.vocab_size, getattr(torch, args.dtype), args.device)
    unit = student.numel() * 4
    results = {}
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss = loss_call(name, student, teacher, args)
        results["kept"] = (torch.cuda.memory_allocated() - base) / unit
        loss.backward()
        torch.cuda.synchronize()
        results["peak"] = (torch.cuda.max_memory_allocated() - base) / unit
        return results
    # The resident set first, while no pass has run yet: a later one would reuse memory the allocator kept.
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets the peak resident set (VmHWM) to the current one
        base = _rss_kib("VmRSS:")
        loss_call(name, student, teacher, args).backward()
        results["peak_rss"] = (_rss_kib("VmHWM:") - base) * 1024 / unit
    except OSError:
        pass
    student.grad = None
    losses = []  # holds the loss, and so what its graph keeps, until the profiler has stopped
    results["kept"] = profiled_bytes(lambda: losses.append(loss_call(name, student, teacher, args)))[1] / unit
    losses.clear()
    student.grad = None
    results["peak"] = profiled_bytes(lambda: loss_call(name, student, teacher, args).backward())[0] / unit
    return results


def memory_in_subprocess(name: str, batch: int, length: int, argv: list[str]) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), *argv, "--measure", f"{name}:{batch}x{length}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- Time, in this process ----


def measure_times(batch: int, length: int, args) -> tuple[dict[str, float], float, float]:
    """Median ms per forward plus backward of each loss; and the largest differences of their values and gradients."""
    student, teacher = make_inputs(batch, length, args.vocab_size, getattr(torch, args.dtype), args.device)
    outputs = {}
    losses = PATHS[args.path]
    for name in losses:  # warm-up, and the check that both give the same loss and gradient
        loss = loss_call(name, student, teacher, args)
        loss.backward()
        outputs[name] = (loss.detach(), student.grad)
        student.grad = None
    (loss_a, grad_a), (loss_b, grad_b) = outputs.values()
    loss_difference = (loss_a - loss_b).abs().item()
    grad_difference = (grad_a.float() - grad_b.float()).abs().max().item()
    del outputs, grad_a, grad_b
    times = {name: [] for name in losses}
    for _ in range(args.rounds):
        for name in losses:
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss_call(name, student, teacher, args).backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) * 1e3)
            student.grad = None
    return {name: statistics.median(values) for name, values in times.items()}, loss_difference, grad_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["2x512", "2x1024"], help="batch x length of each case")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--divergence", default="forward_kl")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--chunk_size", type=int, default=None, help="positions per chunk; default: the loss's own")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, each running every loss once")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument(
        "--path",
        default="loss",
        choices=list(PATHS),
        help="the loss functions, the trainer's soft term, or its soft and hard terms",
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args, argv = parser.parse_args(), sys.argv[1:]
    losses = PATHS[args.path]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.measure is not None:
        name, shape = args.measure.split(":")
        batch, length = map(int, shape.split("x"))
        print(json.dumps(measure_memory(name, batch, length, args)))
        return

    print(
        f"device={args.device} ({torch.get_num_threads()} threads), V={args.vocab_size}, dtype={args.dtype}, "
        f"divergence={args.divergence}, T={args.temperature}, chunk_size={args.chunk_size or 'default'}"
    )
    print("memory: units of one float32 logits tensor beyond the inputs; peak includes the student's gradient")
    columns = "peak      kept      peak RSS" if args.device == "cpu" else "peak      kept"
    print(f"{'tokens':>8}  {'loss':<26}{columns}      ms/call")
    for shape in args.shapes:
        batch, length = map(int, shape.split("x"))
        memory = {name: memory_in_subprocess(name, batch, length, argv) for name in losses}
        times, loss_difference, grad_difference = measure_times(batch, length, args)
        plain, chunked_name = losses
        for name in losses:
            row = f"{batch * length:>8}  {name:<26}{memory[name]['peak']:<10.3f}{memory[name]['kept']:<10.3f}"
            if "peak_rss" in memory[name]:
                row += f"{memory[name]['peak_rss']:<14.3f}"
            print(f"{row}{times[name]:.1f}")
        soft, chunked = (memory[name]["peak"] for name in losses)
        gradient = torch.finfo(getattr(torch, args.dtype)).bits / 32
        time_ratio = times[chunked_name] / times[plain]
        print(
            f"{'':>8}  chunked / soft: peak x{chunked / soft:.3f}, peak beyond the gradient "
            f"{chunked - gradient:.3f} vs {soft - gradient:.3f} (x{(chunked - gradient) / (soft - gradient):.3f}), "
            f"time x{time_ratio:.2f}; max |loss difference| {loss_difference:.1e}, "
            f"max |gradient difference| {grad_difference:.1e}"
        )


if __name__ == "__main__":
    main()
