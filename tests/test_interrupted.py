"""Runs cut short: half-written checkpoints are skipped on resume, an unreachable Hub fails construction clearly."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers.utils.hub
from huggingface_hub import constants
from safetensors.torch import save_file
from transformers import TrainerCallback

from hf_distill import DistillationTrainer
from hf_distill.checkpoints import last_complete_checkpoint, missing_checkpoint_files
from hf_distill.hub import HubPushError
from tests.conftest import TinyCNN, image_dataset, make_args, text_dataset, tiny_bert
from tests.hub_server import FakeHub, fake_hub  # noqa: F401 - `fake_hub` is a fixture
from tests.test_hub import closed_port_url, hub, tiny_timm  # noqa: F401 - `hub` is a fixture

FAMILIES = ("transformers", "plain-module", "timm")


class StepRecorder(TrainerCallback):
    """The step a `train()` call started from, and the steps it trained."""

    def __init__(self) -> None:
        self.start, self.steps = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _trainer(output_dir: Path, family: str, callbacks: list | None = None) -> DistillationTrainer:
    """Six steps of 4 examples, with checkpoints at steps 3 and 6."""
    if family == "transformers":
        student, teacher, dataset = tiny_bert(seed=1), tiny_bert(seed=2), text_dataset(n=32)
    elif family == "plain-module":
        student, teacher, dataset = TinyCNN(seed=1), TinyCNN(width=8, seed=2), image_dataset(n=32)
    else:
        student, teacher, dataset = tiny_timm(seed=1), tiny_timm(seed=2), image_dataset(n=32)
    args = make_args(output_dir, max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=3)
    return DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, callbacks=callbacks
    )


def _weights(trainer: DistillationTrainer) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """family -> (output folder of a finished run, the student's weights after resuming it from checkpoint-3)."""
    runs = {}

    def get(family: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if family not in runs:
            root = tmp_path_factory.mktemp(family)
            _trainer(root / "run", family).train()
            shutil.copytree(root / "run", root / "reference")
            reference = _trainer(root / "reference", family)
            reference.train(resume_from_checkpoint=str(root / "reference" / "checkpoint-3"))
            runs[family] = root / "run", _weights(reference)
        return runs[family]

    return get


def _truncate(path: Path) -> None:
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)


CORRUPTIONS = {
    "no trainer state": (lambda folder: (folder / "trainer_state.json").unlink(), "trainer_state.json (missing)"),
    "truncated weights": (lambda folder: _truncate(folder / "model.safetensors"), "model.safetensors (truncated"),
    "no optimizer": (lambda folder: (folder / "optimizer.pt").unlink(), "optimizer.pt (missing)"),
    "truncated scheduler": (lambda folder: _truncate(folder / "scheduler.pt"), "scheduler.pt (truncated"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_complete_checkpoint_has_nothing_missing(finished_run, family):
    run, _ = finished_run(family)
    assert missing_checkpoint_files(run / "checkpoint-3") == []
    assert missing_checkpoint_files(run / "checkpoint-6") == []
    assert last_complete_checkpoint(run) == str(run / "checkpoint-6")


@pytest.mark.parametrize(
    ("corruption", "family"),
    [(corruption, family) for corruption in CORRUPTIONS for family in FAMILIES[:2]]
    + [("truncated weights", "timm")],  # timm's own format; the timm test model is slow to train on a CPU
)
def test_resume_true_skips_an_incomplete_checkpoint(finished_run, tmp_path, caplog, family, corruption):
    run, resumed_from_3 = finished_run(family)
    out = tmp_path / "out"
    shutil.copytree(run, out)
    corrupt, problem = CORRUPTIONS[corruption]
    corrupt(out / "checkpoint-6")

    recorder = StepRecorder()
    trainer = _trainer(out, family, callbacks=[recorder])
    with caplog.at_level(logging.WARNING, logger="hf_distill.checkpoints"):
        trainer.train(resume_from_checkpoint=True)

    assert (recorder.start, recorder.steps, trainer.state.global_step) == (3, [4, 5, 6], 6)
    for key, value in resumed_from_3.items():
        torch.testing.assert_close(_weights(trainer)[key], value, rtol=0, atol=0, msg=key)
    [warning] = [record.getMessage() for record in caplog.records if record.name == "hf_distill.checkpoints"]
    assert str(out / "checkpoint-6") in warning and problem in warning


def test_resume_true_uses_the_newest_checkpoint_when_it_is_complete(finished_run, tmp_path, caplog):
    run, _ = finished_run("plain-module")
    shutil.copytree(run, tmp_path / "out")
    recorder = StepRecorder()
    with caplog.at_level(logging.WARNING, logger="hf_distill.checkpoints"):
        _trainer(tmp_path / "out", "plain-module", callbacks=[recorder]).train(resume_from_checkpoint=True)
    assert recorder.start == 6
    assert not [record for record in caplog.records if record.name == "hf_distill.checkpoints"]


def test_resume_true_without_a_complete_checkpoint_fails_as_without_any(finished_run, tmp_path):
    run, _ = finished_run("plain-module")
    shutil.copytree(run, tmp_path / "out")
    (tmp_path / "out" / "checkpoint-6" / "trainer_state.json").unlink()
    (tmp_path / "out" / "checkpoint-3" / "optimizer.pt").unlink()
    with pytest.raises(ValueError, match="No valid checkpoint found in output directory"):
        _trainer(tmp_path / "out", "plain-module").train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="No valid checkpoint found in output directory"):
        _trainer(tmp_path / "empty", "plain-module").train(resume_from_checkpoint=True)


def test_missing_checkpoint_files_checks_shards_config_and_pickled_weights(finished_run, tmp_path):
    run, _ = finished_run("plain-module")
    folder = tmp_path / "checkpoint-6"
    shutil.copytree(run / "checkpoint-6", folder)

    (folder / "model.safetensors").unlink()
    assert missing_checkpoint_files(folder) == [
        "model weights (none of model.safetensors, pytorch_model.bin, adapter_model.safetensors, adapter_model.bin, "
        "model.safetensors.index.json, pytorch_model.bin.index.json)"
    ]

    weights = TinyCNN().state_dict()
    shards = {"model-00001-of-00002.safetensors": ["head.weight"], "model-00002-of-00002.safetensors": ["head.bias"]}
    for shard, keys in shards.items():
        save_file({key: weights[key] for key in keys}, folder / shard)
    index = {"weight_map": {key: shard for shard, keys in shards.items() for key in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert missing_checkpoint_files(folder) == []
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert missing_checkpoint_files(folder) == ["model-00002-of-00002.safetensors (missing)"]
    (folder / "model.safetensors.index.json").unlink()

    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"architecture": ')
    assert missing_checkpoint_files(folder) == ["config.json (not valid JSON)"]
    (folder / "config.json").unlink()
    _truncate(folder / "pytorch_model.bin")
    assert missing_checkpoint_files(folder) == ["pytorch_model.bin (truncated or corrupt)"]
    (folder / "trainer_state.json").write_text('{"global_step": 6, "log_hi')
    assert missing_checkpoint_files(folder)[0] == "trainer_state.json (not valid JSON)"


def test_checkpoints_of_save_only_model_runs_need_no_optimizer_state(finished_run, tmp_path):
    run, _ = finished_run("plain-module")
    folder = tmp_path / "checkpoint-6"
    shutil.copytree(run / "checkpoint-6", folder)
    (folder / "optimizer.pt").unlink()
    (folder / "scheduler.pt").unlink()
    assert missing_checkpoint_files(folder) == ["optimizer.pt (missing)", "scheduler.pt (missing)"]
    assert missing_checkpoint_files(folder, with_optimizer=False) == []
    assert last_complete_checkpoint(tmp_path, with_optimizer=False) == str(folder)


# ---- DistillationTrainer(push_to_hub=True) creates the Hub repository ----


def _hub_args(output_dir: Path, **overrides):
    return make_args(output_dir, **{"hub_model_id": "user/distilled", "hub_token": "hf_fake_write_token", **overrides})


def test_an_unreachable_hub_at_construction_is_the_error_of_a_push(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers caches an HfApi with its endpoint
    out = tmp_path / "out"

    with pytest.raises(HubPushError, match=r"Could not connect to http://127\.0\.0\.1:\d+ to push 'user/distilled'"):
        DistillationTrainer(model=TinyCNN(), teacher_model=TinyCNN(seed=1), args=_hub_args(out, push_to_hub=True))
    constructed = DistillationTrainer(model=TinyCNN(), teacher_model=TinyCNN(seed=1), args=_hub_args(out))
    with pytest.raises(HubPushError) as pushed:
        constructed.push_to_hub()
    with pytest.raises(HubPushError) as at_construction:
        DistillationTrainer(model=TinyCNN(), teacher_model=TinyCNN(seed=1), args=_hub_args(out, push_to_hub=True))
    assert str(at_construction.value) == str(pushed.value)
    assert not isinstance(pushed.value.__cause__, HubPushError)  # wrapped once, though push_to_hub calls init_hf_repo


def test_construction_creates_the_repository_on_a_reachable_hub(hub: FakeHub, tmp_path):  # noqa: F811
    with pytest.raises(HubPushError, match=r"Authentication failed \(HTTP 401\).*'user/distilled'"):
        DistillationTrainer(
            model=TinyCNN(), args=_hub_args(tmp_path / "out", push_to_hub=True, hub_token="hf_wrong_token")
        )
    assert "user/distilled" not in hub.repos
    trainer = DistillationTrainer(model=TinyCNN(), args=_hub_args(tmp_path / "out", push_to_hub=True))
    assert trainer.hub_model_id == "user/distilled" and "user/distilled" in hub.repos
