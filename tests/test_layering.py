"""The layers of docs/architecture.md, checked on the source: what may import what, and which
folders stay free of torch, so data, studies and reports work on a laptop without it.

Two checks. (1) Every `import rote...` statement in src/rote (module level or inside a function)
points at a layer its own layer may use (LAYERS, ALLOWED): that is read from the source, so it
also covers imports that only run later. (2) Importing every module of a torch-free folder, in a
fresh interpreter, loads neither torch nor transformers nor accelerate.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "rote"

# Each module's layer: a folder, or a named group of top-level modules.
LAYERS = {
    "package": ["rote"],  # `import rote`: the version, and rote.inject on first use
    "base": ["rote.errors", "rote.names", "rote.fileio", "rote.lock", "rote.config", "rote.config_checks", "rote.arms",
             "rote.text", "rote.strict_yaml"],
    "data": ["rote.data"],
    "evaluation.pure": ["rote.evaluation", "rote.evaluation.queries", "rote.evaluation.matching",
                        "rote.evaluation.metrics"],
    "training": ["rote.training"],
    "editing": ["rote.editing"],
    "evaluation.torch": ["rote.evaluation.scoring", "rote.evaluation.locality"],
    "probe": ["rote.probe"],
    "study": ["rote.study"],
    "report": ["rote.report"],
    "top": ["rote.cli", "rote.runner", "rote.preflight", "rote.train_stage", "rote.eval_stage", "rote.study_runs",
            "rote.injection", "rote.levers"],
}
# What each layer may import (besides itself). Nothing imports `top` but `top`.
ALLOWED = {
    "package": {"top"},  # only inside its __getattr__, so `import rote` stays light (checked below)
    "base": set(),
    "data": {"base"},
    "evaluation.pure": {"base", "data"},
    "training": {"base", "data"},
    "editing": {"base", "data", "training"},
    "evaluation.torch": {"base", "data", "evaluation.pure", "training"},
    "probe": {"base", "data", "training"},
    "study": {"base", "data", "evaluation.pure"},
    "report": {"base", "evaluation.pure"},
    "top": set(LAYERS),
}
# Torch-free: these folders and modules never import torch, transformers or accelerate.
TORCH_FREE = ["package", "base", "data", "evaluation.pure", "study", "report"]
HEAVY = ("torch", "transformers", "accelerate")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in SRC.rglob("*.py"))


def layer_of(module: str) -> str:
    """The layer of `module`: the longest prefix named in LAYERS (rote.probe.geometry -> probe)."""
    best, found = "", None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best) \
                    and (prefix != "rote" or module == "rote"):
                best, found = prefix, layer
    if found is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it (and to docs/architecture.md)")
    return found


def rote_imports(module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every rote import in `module`'s source, at any depth."""
    path = SRC.parent / (module.replace(".", "/") + ("/__init__.py" if (SRC.parent / module.replace(".", "/")).is_dir() else ".py"))
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rote"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rote":
            # `from rote.report import figures` imports rote.report.figures
            out += [(node.lineno, f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module)
                    for a in node.names]
    return out


def test_every_module_has_a_layer():
    assert {layer_of(m) for m in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("module", MODULES)
def test_imports_follow_the_layers(module):
    mine = layer_of(module)
    wrong = [f"line {line}: {target} ({layer_of(target)})" for line, target in rote_imports(module)
             if layer_of(target) != mine and layer_of(target) not in ALLOWED[mine]]
    assert not wrong, f"{module} ({mine}) may import only {sorted(ALLOWED[mine] | {mine})}; it imports {wrong}"


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_torch_free_layers_never_import_torch(layer):
    modules = [m for m in MODULES if layer_of(m) == layer]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\nprint(','.join(heavy)); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"importing {modules} loads {out.stdout.strip()} {out.stderr[-800:]}"


def test_probe_geometry_is_numpy_only():
    code = "import sys, rote.probe.geometry; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_torch_free_tests_run_without_torch():
    """conftest.py imports torch only inside the fixtures that need it, so the tests of the
    torch-free layers run (and are collected) where torch cannot be imported at all."""
    tests = ["tests/test_config.py", "tests/test_metrics.py", "tests/test_names.py", "tests/test_facts.py"]
    code = ("import sys\nfor m in ('torch', 'transformers', 'accelerate'): sys.modules[m] = None  # import fails\n"
            f"import pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{tests!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SRC.parent.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-1000:]
