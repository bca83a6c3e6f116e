"""DistillationTrainingArguments: validation and parsing."""

import pytest
from transformers import HfArgumentParser

from hf_distill import DistillationTrainingArguments


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -2.0}, "temperature"),
        ({"distillation_loss": "kl"}, "distillation_loss"),
        ({"jsd_beta": 0.0}, "jsd_beta"),
        ({"jsd_beta": 1.0}, "jsd_beta"),
        ({"soft_weight": 1.0}, "soft_weight"),
        ({"soft_weight": -1.0, "hard_weight": 1.0}, "soft_weight"),
        ({"teacher_dtype": "int8"}, "teacher_dtype"),
    ],
)
def test_bad_values_raise_naming_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        DistillationTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_every_field_has_help_text():
    from dataclasses import fields

    from transformers import TrainingArguments

    parent = {f.name for f in fields(TrainingArguments)}
    own = [f for f in fields(DistillationTrainingArguments) if f.name not in parent]
    assert {f.name for f in own} >= {"alpha", "temperature", "distillation_loss", "jsd_beta"}
    for f in own:
        assert f.metadata.get("help"), f.name
        assert f.name in DistillationTrainingArguments.__doc__


def test_loss_weights():
    args = DistillationTrainingArguments(output_dir="unused", alpha=0.3)
    assert args.loss_weights == (0.3, pytest.approx(0.7))
    args = DistillationTrainingArguments(output_dir="unused", soft_weight=5.0, hard_weight=2.0)
    assert args.loss_weights == (5.0, 2.0)


def test_hf_argument_parser_reads_the_distillation_fields(tmp_path):
    parser = HfArgumentParser(DistillationTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--alpha",
            "0.9",
            "--temperature",
            "3",
            "--distillation_loss",
            "jsd",
            "--jsd_beta",
            "0.2",
            "--num_train_epochs",
            "2",
        ]
    )
    assert (args.alpha, args.temperature, args.distillation_loss, args.jsd_beta) == (0.9, 3.0, "jsd", 0.2)
    assert args.num_train_epochs == 2
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--distillation_loss", "nope"])
