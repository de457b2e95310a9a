"""One rule in one place: each is implemented once, and the copies that once disagreed cannot come
back unnoticed. Source scans (no torch, no model): a second definition of a shared name, a second
reader of JSON files or relation files, a second page or table builder, dead code, a reference to
a file users do not have."""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "rote"
MODULES = sorted(SRC.rglob("*.py"))


def _where(pattern: str, allowed: set[str], paths=MODULES) -> list[str]:
    """Files (relative to src/rote) with a line matching `pattern`, other than `allowed`."""
    regex = re.compile(pattern)
    out = []
    for path in paths:
        name = str(path.relative_to(SRC if path.is_relative_to(SRC) else ROOT))
        if name in allowed:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if regex.search(line) and not line.lstrip().startswith("#"):
                out.append(f"{name}:{i}: {line.strip()}")
    return out


@pytest.mark.parametrize("pattern, allowed, what", [
    # shared names: stages, splits, prompt sets, languages, forms (they used to mean different sets)
    (r"^(RUN_STAGES|EVAL_STAGES|STAGES|SPLITS|PROMPT_SETS|LANGUAGES|PROMPT_FORMS|FORMS)\s*=", {"names.py"},
     "a shared name defined outside rote.names"),
    (r"[\"']\.done[\"']", {"names.py"}, "the done marker's name outside rote.names"),
    # one I/O module: JSON files are read and written through rote.fileio
    (r"json\.loads\([^)]*read_text", {"fileio.py"}, "a JSON file read outside rote.fileio"),
    (r"\.with_name\(.*\.tmp", {"fileio.py", "training/checkpoint.py", "report/figures.py"},
     "an atomic write outside rote.fileio"),
    # one relation reader, one key-token helper, one query builder
    (r"yaml\.SafeLoader|get_single_node", {"data/relation_files.py", "strict_yaml.py"}, "a second relation-file reader"),
    (r"AddedToken\(", {"training/models.py"}, "key tokens added outside rote.training.models.add_tokens"),
    (r"\.key_token\s+for\b", {"data/templates.py"}, "the key-token list outside rote.data.templates.key_tokens"),
    (r"^def build_queries", {"evaluation/queries.py"}, "a second query builder"),
    # one chat rendering: every prompt goes through a tokenizer's template in rote.data.chat alone
    (r"apply_chat_template\(", {"data/chat.py"}, "a chat template applied outside rote.data.chat"),
    (r"^def (planned_stages|budgeted|supervised_tokens)\b", {"names.py", "training/phases.py"}, "a rule defined twice"),
    # one report package: pages, tables and embedded figures come from rote.report.html
    (r"html\.escape|base64\.b64encode|<table|<!DOCTYPE", {"report/html.py"}, "an HTML helper outside rote.report.html"),
    (r"FigureCanvasAgg\(", {"report/figures.py"}, "a figure made outside rote.report.figures.new_figure"),
    # the paper's numbers are recorded in docs/paper-numbers.md
    (r"PAPER\.md", set(), "a reference to PAPER.md, which users do not have"),
])
def test_one_implementation(pattern, allowed, what):
    found = _where(pattern, allowed)
    assert not found, f"{what}:\n" + "\n".join(found)


def test_the_paper_numbers_page_exists_and_reports_point_to_it():
    assert (ROOT / "docs" / "paper-numbers.md").is_file()
    assert "docs/paper-numbers.md" in (SRC / "report" / "study.py").read_text(encoding="utf-8")
    assert not _where(r"PAPER\.md", set(), sorted((ROOT / "configs").rglob("*.yaml")))


def _defined(tree: ast.Module) -> list[str]:
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("__")]


def test_no_dead_code():
    """Every top-level function and class of src/rote is used somewhere: in src, tests, scripts or
    bench (the runner once kept a JSONL reader and a stage-clearing helper nothing called)."""
    sources = {p: p.read_text(encoding="utf-8") for d in ("src", "tests", "scripts", "bench")
               for p in (ROOT / d).rglob("*.py")}
    words = Counter(w for text in sources.values() for w in re.findall(r"\w+", text))
    unused = [f"{path.relative_to(SRC)}: {name}" for path in MODULES for name in _defined(ast.parse(sources[path]))
              if words[name] < 2]  # its own definition only
    assert not unused, unused


def test_no_test_measures_wall_clock_or_imports_torch_checks_twice():
    """Wall-clock limits fail on a busy machine, not on slow code; the check that a layer stays
    free of torch lives in tests/test_layering.py only."""
    tests = [p for p in (ROOT / "tests").rglob("*.py") if p.name not in ("test_one_rule.py", "test_layering.py")]
    assert not _where(r"perf_counter|time\.time\(\)", set(), tests)
    assert not _where(r"['\"]torch['\"] (not )?in sys\.modules", set(), tests)
    conftest = ast.parse((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    top = [a.name for n in conftest.body if isinstance(n, (ast.Import, ast.ImportFrom))
           for a in n.names] + [n.module for n in conftest.body if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in top if m and m.split(".")[0] in ("torch", "transformers", "rote")], top
