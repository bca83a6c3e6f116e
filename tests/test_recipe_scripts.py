"""Every script in recipes/ answers `--help`: argparse %-formats each help string, so a bare `%` breaks it."""

import importlib.util
import sys
from pathlib import Path

import pytest

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.py"))


def test_recipes_are_found():
    assert {"cifar_resnet", "vit_distill", "text_classification", "distilbert_mlm", "causal_lm"} <= {
        p.stem for p in RECIPES
    }


@pytest.mark.parametrize("script", RECIPES, ids=lambda path: path.stem)
def test_recipe_help_prints_usage_and_exits_0(script, capsys, monkeypatch):
    # in-process, as `python recipes/<script>.py --help` (main(argv) parses argv instead of sys.argv): a subprocess
    # would spend most of its time importing torch, transformers and timm again
    spec = importlib.util.spec_from_file_location(f"recipe_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--output_dir" in out and "show this help message and exit" in out
