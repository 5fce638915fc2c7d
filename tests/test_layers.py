"""The project's modules import downward: configs and utils (0), datasets and models (1, never each
other), losses (2), engine (3), the scripts and tools (4). The datasets read no config: the options
reach them in one object (datasets/spec.py). Every import is read with ast, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# package (or top-level script) -> layer
LAYERS = {"configs": 0, "utils": 0, "datasets": 1, "models": 1, "losses": 2, "engine": 3,
          "adaptation": 4, "validate": 4, "predict": 4, "tools": 4}
# packages that must not import each other: datasets and models (one layer); datasets and configs (the datasets get
# their options from DatasetSpec.from_config, which reads a config it is given)
SEPARATE = {frozenset({"datasets", "models"}), frozenset({"datasets", "configs"})}


def project_modules() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in ("adaptation", "validate", "predict")]
    for package in ("configs", "utils", "datasets", "models", "losses", "engine", "tools"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def imported_packages(path: Path) -> set[str]:
    """The top-level names of the project modules that `path` imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


def owner(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_its_layer_and_below(path):
    package = owner(path)
    for imported in imported_packages(path):
        assert LAYERS[imported] <= LAYERS[package], f"{package} (layer {LAYERS[package]}) imports {imported} " \
                                                    f"(layer {LAYERS[imported]})"
        assert frozenset({package, imported}) not in SEPARATE, f"{package} imports {imported}"


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import torch\nfrom utils.files import write_json\n\n"
                      "def f():\n    from engine.run import RunState\n")
    assert imported_packages(module) == {"utils", "engine"}
