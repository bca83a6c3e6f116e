"""Model cards of distilled students: content from trainers, output folders and reports; metadata validation."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import save_file

from hf_distill import DistillationTrainer
from hf_distill.cli import main
from hf_distill.hub import card_from_output_dir, card_info_from_output_dir, save_timm_model
from hf_distill.hub.card import (
    DistillationCardInfo,
    ModelResult,
    build_model_card,
    is_hub_model_id,
    is_hub_repo_id,
    validate_model_card,
)
from hf_distill.modeling import count_parameters
from tests.conftest import make_args, text_dataset, tiny_bert
from tests.hub_server import FakeHub, fake_hub, validate_card_yaml  # noqa: F401 - `fake_hub` is a fixture

TEACHER_ID = "timm/test_convnext.r160_in1k"


def report() -> dict:
    """A `report.json` in the shared schema; the numbers are inputs of the card, not measured results."""
    rows = {
        "teacher": (TEACHER_ID, 207_324, 0.9312, None, 1.0, 2.41),
        "student_scratch": ("test_resnet", 372_979, 0.8123, 0.0112, 0.8011, 1.13),
        "student_distilled": ("test_resnet", 372_979, 0.8645, 0.0087, 0.9102, 1.12),
    }
    models = {
        key: {
            "model_name": name,
            "parameters": params,
            "size_mb": params * 4 / 1e6,
            "accuracy": acc,
            "accuracy_std": std,
            "accuracies": [acc],
            "agreement": agreement,
            "latency_ms": latency,
            "throughput_per_s": 1000 / latency,
            "per_class_error": [0.1, 0.1, 0.1],
            "confusion_matrix": [[1]],
        }
        for key, (name, params, acc, std, agreement, latency) in rows.items()
    }
    return {
        "task": "image-classification",
        "dataset": "cifar10",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "distillation": {"alpha": 0.9, "temperature": 4.0, "loss": "forward_kl", "epochs": 15, "seeds": [0, 1, 2]},
        "device": "cpu (2 threads)",
        "models": models,
    }


@pytest.fixture
def timm_output_dir(tmp_path: Path) -> Path:
    import timm

    save_timm_model(timm.create_model("test_resnet", num_classes=3), str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps(report()))
    return tmp_path


def test_card_from_a_timm_output_folder_says_what_and_how_it_was_distilled(timm_output_dir: Path) -> None:
    card = card_from_output_dir(timm_output_dir, repo_id="org/resnet-distilled")
    data, text, expected = card.data, card.text, report()

    assert data.library_name == "timm"
    assert data.base_model == TEACHER_ID
    assert data.datasets == ["cifar10"]
    assert data.metrics == ["accuracy"]
    assert data.pipeline_tag == "image-classification"
    assert {"knowledge-distillation", "hf_distill"} <= set(data.tags)
    for setting in (
        "| alpha (weight of the teacher term) | 0.9 |",
        "| Temperature T | 4 |",
        "`forward_kl`",
        "| Epochs | 15 |",
        "| Seeds | 0, 1, 2 |",
        f"[{TEACHER_ID}](https://huggingface.co/{TEACHER_ID})",
    ):
        assert setting in text
    for key, label in (
        ("teacher", "Teacher"),
        ("student_scratch", "Student trained from scratch"),
        ("student_distilled", "Distilled student (this model)"),
    ):
        row = expected["models"][key]
        line = next(line for line in text.splitlines() if line.startswith(f"| {label} (`{row['model_name']}`)"))
        assert f"{100 * row['accuracy']:.2f}" in line
        assert f"{row['latency_ms']:.2f}" in line
        assert f"{row['parameters'] / 1e3:.2f}K" in line
    assert "cpu (2 threads)" in text
    assert 'timm.create_model("hf-hub:org/resnet-distilled", pretrained=True)' in text

    # The results travel in the model-index metadata too.
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "resnet-distilled"
    assert [(r.task_type, r.dataset_type, r.metric_type) for r in results] == [
        ("image-classification", "cifar10", "accuracy")
    ]
    assert results[0].metric_value == pytest.approx(expected["models"]["student_distilled"]["accuracy"])


def test_card_metadata_round_trips_and_passes_validation(
    timm_output_dir: Path,
    fake_hub: FakeHub,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = card_from_output_dir(timm_output_dir, repo_id="org/resnet-distilled")
    validate_model_card(card)
    path = timm_output_dir / "README.md"
    card.save(path)
    assert metadata_load(path) == card.data.to_dict()
    assert ModelCard.load(path).data.to_dict() == card.data.to_dict()

    # ModelCard.validate posts to the Hub's validate-yaml endpoint: here the fake one, with the Hub's rules.
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    card.validate()
    card.data.datasets = {"cifar10": "not a list of ids"}
    with pytest.raises(ValueError, match="datasets"):
        card.validate()


def test_fake_hub_validation_rejects_a_model_index_without_metric_type(timm_output_dir: Path) -> None:
    text = str(card_from_output_dir(timm_output_dir))
    assert validate_card_yaml(text) == []
    errors = validate_card_yaml(text.replace("    - type: accuracy\n", "    - name: no type\n"))
    assert errors == ['"model-index[].results[].metrics[]" needs "type" and "value"']


def test_validate_model_card_rejects_missing_tags_and_local_base_models() -> None:
    info = DistillationCardInfo(model_name="student", library_name="timm", teacher_id="teacher")
    card = build_model_card(info)
    validate_model_card(card)
    card.data.tags = ["image-classification"]
    card.data.base_model = "/home/me/teacher"
    with pytest.raises(ValueError, match=r"tags miss.*base_model"):
        validate_model_card(card)


def test_card_for_a_transformers_folder_without_report(tmp_path: Path) -> None:
    student = tiny_bert()
    student.save_pretrained(tmp_path)
    (tmp_path / "trainer_state.json").write_text(
        json.dumps({"global_step": 12, "log_history": [{"eval_accuracy": 0.5}, {"eval_accuracy": 0.625}, {"loss": 1}]})
    )
    info = card_info_from_output_dir(tmp_path, repo_id="org/bert-student")
    assert (info.library_name, info.task, info.auto_class) == (
        "transformers",
        "text-classification",
        "AutoModelForSequenceClassification",
    )
    assert info.results["student_distilled"].accuracy == 0.625
    assert info.results["student_distilled"].parameters == count_parameters(student)
    card = build_model_card(info)
    validate_model_card(card)
    assert 'AutoModelForSequenceClassification.from_pretrained("org/bert-student")' in card.text
    assert 'AutoTokenizer.from_pretrained("org/bert-student")' in card.text
    assert "| Optimizer steps | 12 |" in card.text
    assert "model-index" not in card.data.to_dict()  # no dataset known: the accuracy stays in the table only


def test_trainer_card_reads_arguments_models_and_latest_evaluation(tmp_path: Path) -> None:
    student, teacher = tiny_bert(seed=0, layers=1), tiny_bert(seed=1, layers=2)
    args = make_args(tmp_path / "out", max_steps=2, alpha=0.8, temperature=3.0, distillation_loss="jsd")
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=text_dataset(),
        eval_dataset=text_dataset(seed=1),
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.create_model_card(model_name="bert-student", dataset="glue", tags=["sst2"], license="apache-2.0")

    card = ModelCard.load(tmp_path / "out" / "README.md")
    validate_model_card(card)
    assert card.data.datasets == ["glue"] and card.data.license == "apache-2.0"
    assert {"sst2", "knowledge-distillation", "hf_distill"} <= set(card.data.tags)
    assert card.data.library_name == "transformers"
    assert "| alpha (weight of the teacher term) | 0.8 |" in card.text and "| Temperature T | 3 |" in card.text
    assert "`jsd`" in card.text and "| Max steps | 2 |" in card.text
    teacher_line = next(line for line in card.text.splitlines() if line.startswith("| Teacher ("))
    assert f"{count_parameters(teacher) / 1e3:.2f}K" in teacher_line
    assert f"{100 * metrics['eval_teacher_accuracy']:.2f}%" in teacher_line
    student_line = next(line for line in card.text.splitlines() if line.startswith("| Distilled student"))
    assert f"{100 * metrics['eval_accuracy']:.2f}%" in student_line
    assert f"{100 * metrics['eval_teacher_agreement']:.2f}%" in student_line

    # A report in the folder (written after the comparison runs) fills the table instead.
    (tmp_path / "out" / "report.json").write_text(json.dumps(report()))
    trainer.create_model_card(model_name="bert-student")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "Student trained from scratch" in text and "| Epochs | 15 |" in text


def test_card_for_a_plain_module_student_explains_loading_the_state_dict(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, tmp_path / "model.safetensors")
    info = card_info_from_output_dir(tmp_path)
    assert info.library_name is None and info.results["student_distilled"].parameters == 15
    card = build_model_card(info)
    validate_model_card(card)
    assert "model.load_state_dict(state_dict)" in card.text


def test_results_table_formats_known_and_missing_values() -> None:
    info = DistillationCardInfo(
        model_name="s", library_name="timm", results={"student_distilled": ModelResult("s", 1_234_567, 0.5, 0.01)}
    )
    line = next(line for line in build_model_card(info).text.splitlines() if line.startswith("| Distilled"))
    assert line == "| Distilled student (this model) (`s`) | 1.23M | 50.00 ± 1.00% | — | — |"


def test_is_hub_model_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_hub_model_id("timm/resnet18.a1_in1k") and is_hub_model_id("openai-community/gpt2")
    assert not is_hub_model_id(str(tmp_path)) and not is_hub_model_id("./local/model")
    assert not is_hub_model_id("BertModel (local checkpoint)") and not is_hub_model_id(None)
    # a bare name is a timm architecture or a folder as often as a Hub model: not linked, not a base_model
    assert not is_hub_model_id("resnet18") and not is_hub_model_id("gpt2")
    (tmp_path / "out" / "teacher").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_model_id("out/teacher")  # an existing relative folder
    assert is_hub_repo_id("cifar10")  # dataset ids keep their older, ownerless form


def _teacher_card(tmp_path: Path, teacher_name: str, teacher: dict | None) -> ModelCard:
    """The card of a timm output folder whose report names the teacher `teacher_name` (and describes it if given)."""
    import timm

    content = report()
    content["models"]["teacher"]["model_name"] = teacher_name
    if teacher is not None:
        content["teacher"] = teacher
    save_timm_model(timm.create_model("test_resnet", num_classes=3), str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps(content))
    card = card_from_output_dir(tmp_path, repo_id="org/resnet-distilled")
    validate_model_card(card)
    return card


@pytest.mark.parametrize(
    "teacher_name, teacher, shown",
    [
        (  # trained by a vision recipe: the timm architecture is no Hub model
            "resnet18",
            {"name": "resnet18", "origin": "trained locally by this recipe", "hub_id": None, "settings": {}},
            "`resnet18` (trained locally by this recipe)",
        ),
        (  # a local folder whose name looks like an owner/name id
            "out/teacher",
            {"name": "out/teacher", "origin": "local checkpoint", "hub_id": None, "settings": None},
            "`out/teacher` (local checkpoint)",
        ),
        ("resnet18", None, "`resnet18`"),  # a report written before teachers were described
    ],
)
def test_card_shows_a_local_teacher_as_plain_text_without_base_model(
    tmp_path: Path, teacher_name: str, teacher: dict | None, shown: str
) -> None:
    card = _teacher_card(tmp_path, teacher_name, teacher)
    assert card.data.base_model is None and "base_model" not in str(card).split("\n---\n")[0]
    assert "huggingface.co" not in str(card)
    assert f"distilled from {shown} on cifar10" in card.text
    assert f"| Teacher | {shown} |" in card.text


def test_card_links_a_hub_teacher_and_sets_base_model(tmp_path: Path) -> None:
    hub_teacher = {"name": "resnet18 (CIFAR stem)", "origin": None, "hub_id": "timm/resnet18.a1_in1k"}
    card = _teacher_card(tmp_path, "hf-hub:timm/resnet18.a1_in1k", {**hub_teacher, "settings": None})
    link = "[timm/resnet18.a1_in1k](https://huggingface.co/timm/resnet18.a1_in1k)"
    assert card.data.base_model == "timm/resnet18.a1_in1k"
    assert f"distilled from {link} on cifar10" in card.text and f"| Teacher | {link} |" in card.text
    assert ModelCard(str(card)).data.base_model == "timm/resnet18.a1_in1k"


def test_trainer_card_does_not_claim_timm_hub_weights_for_a_teacher_built_by_name(tmp_path: Path) -> None:
    import timm

    # timm fills `pretrained_cfg["hf_hub_id"]` even without pretrained weights: this teacher is no Hub model
    teacher = timm.create_model("test_convnext", num_classes=3)
    assert teacher.pretrained_cfg["hf_hub_id"].startswith("timm/")
    args = make_args(tmp_path / "out")
    student = timm.create_model("test_resnet", num_classes=3)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    trainer.create_model_card(model_name="student")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model is None and "huggingface.co/timm" not in card.text
    assert "| Teacher | `test_convnext` |" in card.text


def test_cli_card_writes_readme_once(timm_output_dir: Path, capsys) -> None:
    assert main(["card", str(timm_output_dir), "--repo-id", "org/resnet-distilled"]) == 0
    card = ModelCard.load(timm_output_dir / "README.md")
    assert card.data.base_model == TEACHER_ID
    assert main(["card", str(timm_output_dir)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["card", str(timm_output_dir), "--force"]) == 0


def test_trainer_card_names_each_teacher_of_an_ensemble_and_how_they_are_mixed(tmp_path: Path) -> None:
    import timm

    teachers = [timm.create_model("test_convnext", num_classes=3), timm.create_model("test_resnet", num_classes=3)]
    args = make_args(tmp_path / "out", teacher_weights=[3.0, 1.0])
    student = timm.create_model("test_resnet", num_classes=3)
    trainer = DistillationTrainer(model=student, teacher_model=teachers, args=args)
    trainer.create_model_card(model_name="student")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    validate_model_card(card)
    assert "TeacherEnsemble" not in card.text and card.data.base_model is None
    expected = "`test_convnext + test_resnet` (an ensemble of 2 teachers, their tempered probabilities mixed "
    expected += "0.75, 0.25)"
    assert f"| Teacher | {expected} |" in card.text
    teacher_line = next(line for line in card.text.splitlines() if line.startswith("| Teacher ("))
    assert f"{sum(count_parameters(t) for t in teachers) / 1e3:.2f}K" in teacher_line


def test_card_describes_a_routed_ensemble_and_names_one_teacher_as_itself() -> None:
    import timm

    from hf_distill.hub.card_info import _teacher_identity
    from hf_distill.teachers import TeacherEnsemble

    members = {"cnn": timm.create_model("test_convnext", num_classes=3), "res": timm.create_model("test_resnet")}
    routed = TeacherEnsemble(members, route_column="teacher")
    assert _teacher_identity(routed) == (
        "test_convnext + test_resnet",
        "an ensemble of 2 teachers, each example routed to one by `teacher`",
    )
    assert _teacher_identity(TeacherEnsemble([members["res"]])) == ("test_resnet", None)
