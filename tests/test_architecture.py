"""The package layout holds: imports point one way (trainer down to losses and teachers; Hub and reports on top), no
cycles, deferred imports included, the public API is importable from `hf_distill`, and modules stay small."""

import ast
import importlib
from pathlib import Path

import pytest

import hf_distill

PACKAGE_DIR = Path(hf_distill.__file__).parent
MAX_MODULE_LINES = 320

# What each part may import from the rest of the package (itself always allowed).
ALLOWED = {
    "losses": set(),
    "terms": {"losses"},
    "modeling": set(),
    "teachers": {"modeling"},
    "metrics": {"terms", "losses"},
    "hub": {"modeling"},
    "students": set(),
    "config": {"losses", "on_policy"},
    "validation": {"losses"},
    "checkpoints": set(),
    "hooks": set(),
    "projectors": set(),
    "feature_training": {"hooks", "modeling", "projectors"},
    "cache_training": {"modeling", "teachers", "terms"},
    "on_policy": {"modeling", "terms"},
    "vocabularies": {"validation"},
}
# Never imported by the trainer side (trainer, config and everything they use).
TOP_LAYERS = {"evaluation", "data", "recipes", "cli"}


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE_DIR.rglob("*.py")
    }


def _imports(name: str, path: Path) -> set[str]:
    """Package modules imported anywhere in `path` (at the top or inside functions), resolved to module names."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c.startswith("hf_distill"))
    return found


MODULES = _modules()
GRAPH = {name: {target for target in _imports(name, path) if target in MODULES} for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    """Module-level cycles (a package `__init__` re-exporting its own modules is not one)."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in GRAPH[node]:
            if target == node or node.startswith(target + "."):  # a module importing its own package's __init__
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target] if target in stack else [node, target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_layers_below_it(part):
    for module, targets in GRAPH.items():
        if _part(module) != part:
            continue
        for target in targets:
            other = _part(target)
            assert other == part or other in ALLOWED[part], f"{module} imports {target}"


def test_the_trainer_side_never_imports_reports_data_or_recipes():
    trainer_side = {"trainer", "config", *ALLOWED}
    for module, targets in GRAPH.items():
        if _part(module) in trainer_side:
            assert not {_part(t) for t in targets} & TOP_LAYERS, f"{module} imports {sorted(targets)}"


def test_public_api_and_old_module_paths():
    for name in hf_distill.__all__:
        assert getattr(hf_distill, name) is not None, name
    from hf_distill.losses import forward_kl, soft_target_loss  # noqa: F401
    from hf_distill.trainer import DistillationTrainer

    assert DistillationTrainer is hf_distill.DistillationTrainer
    for module in ("hf_distill.config", "hf_distill.terms", "hf_distill.hub", "hf_distill.metrics"):
        importlib.import_module(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by topic"
