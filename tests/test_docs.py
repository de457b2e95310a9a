"""Docs that cannot drift from the code: the generated reference pages (docs/config.md, docs/cli.md)
are what the code says and describe every key and flag, and every repository path the README, the
docs and the example files name exists."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md",
         *sorted((ROOT / "configs").rglob("*.yaml")), *sorted((ROOT / "examples").rglob("*.yaml"))]
# A path as the docs write one: under a top folder of the repository, with a file name or a folder.
PATH = re.compile(r"(?<![\w/.~-])((?:src|configs|docs|bench|scripts|examples|tests)/[\w./*{},-]{2,}[\w*/}])")
PLACEHOLDER = re.compile(r"(^|/)[A-Z][A-Z_]+(\.|/|$)")  # configs/studies/NAME.yaml: a pattern, not a path


def _expand(path: str) -> list[str]:
    """bench/results/h200-run{1,2,3}.txt -> the three paths it names."""
    found = re.search(r"\{([^{}]*)\}", path)
    if not found:
        return [path]
    return [p for part in found.group(1).split(",") for p in _expand(path[:found.start()] + part + path[found.end():])]


def test_reference_pages_are_what_the_code_says():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("page", ["config.md", "cli.md"])
def test_every_key_and_flag_is_described(page):
    rows = [line for line in (ROOT / "docs" / page).read_text().splitlines() if line.startswith("| `")]
    assert rows and not [r.split("|")[1].strip() for r in rows if r.rstrip().endswith("|  |")]


def test_every_config_key_is_on_the_page():
    import dataclasses
    import typing
    from rote.config import RunConfig

    def keys(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from keys(hints[f.name], f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    text = (ROOT / "docs" / "config.md").read_text()
    assert [k for k in keys(RunConfig) if f"| `{k}` |" not in text] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_page_names_exists(page):
    missing = []
    for found in PATH.findall(page.read_text(encoding="utf-8")):
        if PLACEHOLDER.search(found):
            continue
        for path in _expand(found.rstrip("/.")):
            if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"
