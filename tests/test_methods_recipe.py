"""Distillation methods by name in the comparison and the vision recipe: the parser, its errors before training,
fresh terms per run, the report's method field, and born-again generations end to end on tiny models."""

import json
import os

import pytest
import timm
from torch import nn

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation import comparison
from hf_distill.evaluation.ablation import check_settings
from hf_distill.evaluation.arguments import ComparisonArguments
from hf_distill.evaluation.methods import METHODS, RESNET_LAYERS, check_methods, parse_method
from hf_distill.hub import card_from_output_dir
from hf_distill.terms import FeatureTerm
from tests.test_vision_recipes import TINY, argv, check_report, load_recipe

# method -> (teacher term, standardization, feature terms as (loss, module, weight) on two ResNets)
EXPECTED = {
    "kd": ("kd", False, []),
    "dkd": ("dkd", False, []),
    "dist": ("dist", False, []),
    "kd+ls": ("kd", True, []),
    "fitnet": (None, False, [("l2", "layer2", 100.0)]),
    "at": (None, False, [("at", f"layer{i}", 1000.0) for i in range(1, 5)]),
    "rkd": (None, False, [("rkd_distance", "global_pool", 25.0), ("rkd_angle", "global_pool", 50.0)]),
    "sp": (None, False, [("sp", "layer4", 3000.0)]),
    "dkd+at": ("dkd", False, [("at", f"layer{i}", 1000.0) for i in range(1, 5)]),
}


@pytest.fixture(scope="module")
def resnets():
    return timm.create_model("test_resnet", num_classes=10), timm.create_model("resnet10t", num_classes=10)


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    return DistillationTrainingArguments(output_dir=str(tmp_path_factory.mktemp("args")), alpha=0.7, report_to="none")


@pytest.mark.parametrize("name", METHODS)
def test_every_listed_method_parses_to_its_teacher_term_and_fresh_feature_terms(name, resnets, args):
    assert set(EXPECTED) == set(METHODS)
    logit, standardize, features = EXPECTED[name]
    method = parse_method(name)
    assert method.name == name and method.logit_method == logit and method.standardize == standardize
    overrides = method.training_overrides(args)
    assert overrides["distillation_method"] == (logit or "kd")
    assert overrides["logit_standardization"] == standardize
    assert overrides.get("alpha", args.alpha) == (args.alpha if logit else 0.0)  # feature methods: labels + features
    terms = method.make_terms(*resnets)
    assert all(isinstance(term, FeatureTerm) for term in terms)
    assert [(t.loss, t.student_module, t.weight) for t in terms] == features
    assert all(t.teacher_module == t.student_module for t in terms)
    again = method.make_terms(*resnets)
    assert not {id(t) for t in terms} & {id(t) for t in again}  # each run gets its own terms and projections
    described = method.describe(DistillationTrainingArguments(**{**args.to_dict(), **overrides}))
    assert described["name"] == name
    assert (described["teacher_term"] or {}).get("method") == logit
    assert [(f["loss"], f["student_module"], f["weight"]) for f in described["feature_terms"]] == features


def test_sums_are_canonical_and_layers_apply_to_every_feature_part(resnets):
    assert parse_method(" AT + dkd ").name == "dkd+at"
    method = parse_method("fitnet+sp", ["layer3"], ["layer4"])
    terms = method.make_terms(*resnets)
    assert [(t.loss, t.student_module, t.teacher_module) for t in terms] == [
        ("l2", "layer3", "layer4"),
        ("sp", "layer3", "layer4"),
    ]
    assert parse_method("kd", ["layer3"], ["layer3"]).student_modules is None  # no feature part: paths unused
    assert set(RESNET_LAYERS) == {"fitnet", "at", "sp", "rkd"}


@pytest.mark.parametrize(
    "method, message",
    [
        ("kd+foo", "Unknown part 'foo'"),
        ("", "Unknown part ''"),
        ("kd+dkd", "sums the logit methods"),
        ("at+at", "repeats"),
        ("ls", "'ls' standardizes"),
        ("at+ls", "'ls' standardizes"),
    ],
)
def test_bad_methods_fail_with_the_valid_parts(method, message):
    with pytest.raises(ValueError, match=message):
        parse_method(method)
    with pytest.raises(ValueError, match=message):
        ComparisonArguments(method=method)  # at argument parsing, before any data or model


def test_module_paths_errors(resnets, args):
    with pytest.raises(ValueError, match="Give both"):
        parse_method("at", ["layer3"], None)
    with pytest.raises(ValueError, match="pair one by one"):
        parse_method("at", ["layer3", "layer4"], ["layer3"])
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="default module paths only for ResNet-style models.*student_modules"):
        parse_method("sp").make_terms(plain, resnets[1])
    with pytest.raises(ValueError, match=r"no module 'layer9'.*closest"):
        parse_method("at", ["layer9"], ["layer3"]).make_terms(*resnets)
    with pytest.raises(ValueError, match="disagree with method 'kd'"):
        parse_method("kd").training_overrides(
            DistillationTrainingArguments(**{**args.to_dict(), "alpha": 0.5, "distillation_method": "dkd"})
        )
    # born-again generations: a student teaches a student
    check_methods([parse_method("dkd+at")], args, lambda: resnets[0], resnets[1], student_teaches=True)


def test_ablation_takes_a_method_setting():
    check_settings(["method=dkd+at", "method=kd+ls,temperature=2"], {"temperature"}, False)
    with pytest.raises(ValueError, match="Unknown part 'foo'"):
        check_settings(["method=foo"], set(), False)
    with pytest.raises(ValueError, match="method=..."):
        check_settings(["distillation_method=dkd"], {"distillation_method"}, False)


def test_feature_method_with_a_wrong_module_fails_before_training(tmp_path):
    recipe, out = load_recipe("cifar_resnet"), tmp_path / "run"
    with pytest.raises(ValueError, match=r"no module 'layer9'.*layer"):
        recipe.main(argv(out, method="at", student_modules=["layer9"], teacher_modules=["layer3"]))
    assert not (out / "teacher").exists()


def test_method_and_born_again_generations_end_to_end(tmp_path, monkeypatch):
    """dkd+at with 2 generations and a method ablation: each distilled run has its own fresh AT terms and the DKD
    teacher term; generation 2 of each seed learns from generation 1's student of that seed; the report says so."""
    calls, train = [], comparison.train

    def recording_train(model, args, train_dataset, eval_dataset, teacher=None, data_collator=None, **kwargs):
        trained, history = train(model, args, train_dataset, eval_dataset, teacher, data_collator, **kwargs)
        folder = os.path.relpath(args.output_dir, out)
        terms = kwargs.get("extra_loss_terms") or []
        calls.append({"folder": folder, "args": args, "teacher": teacher, "terms": terms, "model": trained})
        return trained, history

    monkeypatch.setattr(comparison, "train", recording_train)
    recipe, out = load_recipe("cifar_resnet"), tmp_path / "run"
    recipe.main(argv(out, method="dkd+at", generations=2, ablation=["method=sp"]))
    report = check_report(out)
    runs = {call["folder"]: call for call in calls}
    for seed in (0, 1):
        scratch = runs[f"students/student_scratch-seed{seed}"]
        first = runs[f"students/student_distilled-seed{seed}"]
        second = runs[f"generations/generation-2/student_distilled-seed{seed}"]
        assert scratch["teacher"] is None and scratch["terms"] == [] and scratch["args"].alpha == 0.0
        assert first["args"].distillation_method == second["args"].distillation_method == "dkd"
        assert [t.student_module for t in first["terms"]] == [f"layer{i}" for i in range(1, 5)]
        assert second["teacher"] is first["model"]  # the first generation's student of the same seed teaches
        assert first["teacher"] is not second["teacher"] and second["args"].max_steps == first["args"].max_steps
        ablation = runs[f"ablation/method-sp/student_distilled-seed{seed}"]
        assert [t.loss for t in ablation["terms"]] == ["sp"] and ablation["args"].alpha == 0.0
    terms = [id(term) for call in calls for term in call["terms"]]
    assert len(terms) == len(set(terms))  # fresh terms, fresh projections, per run
    assert report["distillation"]["method"] == "dkd+at" and report["method"]["name"] == "dkd+at"
    assert report["settings"][0]["method"]["name"] == "dkd+at"
    assert report["ablation"][0]["method"]["name"] == "sp"
    first, second = report["generations"]
    assert (first["generation"], first["teacher"], second["generation"], second["teacher"]) == (
        1,
        "teacher",
        2,
        "generation 1",
    )
    assert first["student_distilled_accuracies"] == report["settings"][0]["student_distilled_accuracies"]
    assert second["student_scratch_accuracies"] == report["settings"][0]["student_scratch_accuracies"]
    pairs = zip(second["student_distilled_accuracies"], second["student_scratch_accuracies"], strict=True)
    assert second["differences"] == pytest.approx([d - s for d, s in pairs]) and len(second["differences"]) == 2
    markdown = (out / "report.md").read_text()
    assert "## Born-again generations" in markdown and "| 2 | generation 1 | dkd+at |" in markdown
    assert "Method: dkd+at: dkd (" in markdown and "- method=sp: sp: sp on layer4→layer4" in markdown
    assert json.loads((out / "report.json").read_text())["generations"] == report["generations"]
    card = card_from_output_dir(out).text  # the card states the teacher term and the method actually used
    assert "| Distillation loss | `dkd`: alpha · (dkd_alpha · TCKD" in card and "forward_kl" not in card
    assert "| Method | dkd+at |" in card


def test_methods_benchmark_runs_every_method_against_scratch(tmp_path):
    """benchmarks/methods.py on the tiny recipe config: one row per method and scratch, paired over the seeds, with
    a step time measured for each."""
    from benchmarks.methods import main

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "output_dir": str(tmp_path / "unused")}))
    out = tmp_path / "bench"
    command = ["--config", str(config), "--seeds", "0", "1", "--max_steps", "2", "--output_dir", str(out)]
    rows = main([*command, "--methods", "kd", "rkd", "--cpu_threads", "0"])  # 0: this process keeps its threads
    assert [row["method"] for row in rows] == ["scratch", "kd", "rkd"]
    assert all(row["seeds"] == [0, 1] and len(row["differences"]) == 2 and row["step_s"] > 0 for row in rows)
    assert rows[0]["step_ratio"] == 1.0 and rows[0]["difference_mean"] == 0.0
    assert json.loads((out / "methods.json").read_text())["rows"][1]["method"] == "kd"
