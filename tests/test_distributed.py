"""Two CPU processes (gloo) against one: same updates, main-process-only writes, clean exits, resumable runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_run.py")
ROOT = SCRIPT.parent.parent
# Two processes that each use one thread: gloo on CPU, as `accelerate launch` runs it on a machine without GPUs.
LAUNCH_TWO = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# Float32 sums reduced in a different order across processes: differences stay at rounding level.
TOLERANCE = 1e-6


def _run(command, output_dir, timeout=300, **options):
    result = subprocess.run(
        [*command, str(SCRIPT), "--output_dir", str(output_dir), *options_to_argv(options)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for fatal in ("Abort", "Segmentation fault", "core dumped", "Traceback"):
        assert fatal not in result.stderr, result.stderr[-3000:]
    return result


def options_to_argv(options):
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def _weights(output_dir):
    return load_file(str(Path(output_dir) / "final.safetensors"))


def _losses(output_dir):
    history = json.loads((Path(output_dir) / "log_history.json").read_text())
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def _max_difference(a, b):
    assert set(a) == set(b)
    return max((a[key] - b[key]).abs().max().item() for key in a)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    """The reference: one process, a batch of 8 per step, 12 steps."""
    output_dir = tmp_path_factory.mktemp("single")
    _run([sys.executable], output_dir, per_device_train_batch_size=8, max_steps=12)
    return output_dir


def test_two_processes_match_one_process_over_the_same_global_batch(single_process_run, tmp_path):
    _run(LAUNCH_TWO, tmp_path, per_device_train_batch_size=4, max_steps=12, save_steps=6)
    assert _max_difference(_weights(single_process_run), _weights(tmp_path)) < TOLERANCE
    single, double = _losses(single_process_run), _losses(tmp_path)
    assert single.keys() == double.keys() == set(range(1, 13))
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=TOLERANCE)

    records = [json.loads((tmp_path / f"process_{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    # The teacher sits on each process's device, unwrapped (it has no gradients to synchronise).
    assert all(record["teacher_device"] == "cpu" and not record["teacher_is_wrapped"] for record in records)
    # Only the main process writes: save_model on rank 1 wrote nothing; one set of checkpoints.
    assert [record["wrote_save_model"] for record in records] == [True, False]
    assert not (tmp_path / "save_model_rank1").exists()
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]


def test_a_killed_two_process_run_resumes_from_its_last_checkpoint(single_process_run, tmp_path):
    command = [
        *LAUNCH_TWO,
        str(SCRIPT),
        "--output_dir",
        str(tmp_path),
        *options_to_argv(
            {"per_device_train_batch_size": 4, "max_steps": 12, "save_steps": 4, "seconds_per_step": 0.5}
        ),
    ]
    process = subprocess.Popen(
        command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    checkpoint = tmp_path / "checkpoint-4"
    deadline = time.time() + 240
    while not (checkpoint / "trainer_state.json").exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint-4 within 240 s"
        time.sleep(0.2)
    time.sleep(1.0)  # a step or two beyond the checkpoint, then the machine "fails"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / "final.safetensors").exists(), "the run finished before it was killed"
    last = max(tmp_path.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    last_step = int(last.name.split("-")[1])
    assert last_step < 12

    _run(LAUNCH_TWO, tmp_path, per_device_train_batch_size=4, max_steps=12, save_steps=4, resume_from_checkpoint=last)
    losses = _losses(tmp_path)
    # Only the steps after the last checkpoint were run again, and the run ends where the uninterrupted one does.
    for rank in (0, 1):
        record = json.loads((tmp_path / f"process_{rank}.json").read_text())
        assert record["steps_run"] == list(range(last_step + 1, 13))
    assert sorted(losses) == list(range(1, 13))
    assert _max_difference(_weights(single_process_run), _weights(tmp_path)) < TOLERANCE
    for step, loss in losses.items():
        assert loss == pytest.approx(_losses(single_process_run)[step], abs=TOLERANCE)


def test_two_process_label_smoothing_and_transfer_sets_match_one_process(tmp_path):
    """Label smoothing and unlabelled rows (soft loss over every example, hard loss over the labelled ones) keep
    the updates of one process with the same global batch: each term's mean is over the whole global batch."""
    options = dict(max_steps=4, alpha=0.6, label_smoothing_factor=0.1, unlabelled_every=3)
    _run([sys.executable], tmp_path / "one", per_device_train_batch_size=8, **options)
    _run(LAUNCH_TWO, tmp_path / "two", per_device_train_batch_size=4, **options)
    assert _max_difference(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < TOLERANCE


def test_two_process_alpha_zero_with_label_smoothing_equals_the_plain_trainer(tmp_path):
    options = dict(per_device_train_batch_size=4, max_steps=4, alpha=0.0, label_smoothing_factor=0.1)
    _run(LAUNCH_TWO, tmp_path / "distilled", **options)
    _run(LAUNCH_TWO, tmp_path / "plain", plain_trainer=1, **options)
    assert _max_difference(_weights(tmp_path / "distilled"), _weights(tmp_path / "plain")) < TOLERANCE
    distilled, plain = _losses(tmp_path / "distilled"), _losses(tmp_path / "plain")
    for step in plain:
        assert distilled[step] == pytest.approx(plain[step], abs=TOLERANCE)


def test_two_process_feature_hint_with_a_projection_matches_one_process(tmp_path):
    """A FitNets hint through a learned projection (outside the DDP-wrapped student): the projection's gradients are
    averaged over processes like the student's, so both train as one process with the same global batch does."""
    options = dict(max_steps=4, feature_term=1)
    _run([sys.executable], tmp_path / "one", per_device_train_batch_size=8, **options)
    _run(LAUNCH_TWO, tmp_path / "two", per_device_train_batch_size=4, **options)
    assert _max_difference(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < TOLERANCE
    one, two = (load_file(str(tmp_path / run / "projectors.safetensors")) for run in ("one", "two"))
    assert set(one) == {"l2_bert_encoder_layer_1.weight", "l2_bert_encoder_layer_1.bias"}
    assert _max_difference(one, two) < TOLERANCE
    assert "l2_bert.encoder.layer.1_loss" in json.loads((tmp_path / "two" / "log_history.json").read_text())[0]
