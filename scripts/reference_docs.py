"""Generate the reference pages that must not drift from the code: docs/config.md (every config key,
its type, default and the comment beside it in src/rote/config.py) and docs/cli.md (every subcommand
and flag, from rote.cli.build_parser).

    python scripts/reference_docs.py            # rewrite both pages
    python scripts/reference_docs.py --check    # exit 1 when a page differs from what the code says

tests/test_docs.py runs the check: a key or flag added without regenerating fails it.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_SOURCE = ROOT / "src" / "rote" / "config.py"
PAGES = {"config": ROOT / "docs" / "config.md", "cli": ROOT / "docs" / "cli.md"}


def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment lines right above the field and the comment after it."""
    source = CONFIG_SOURCE.read_text(encoding="utf-8")
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above, row = [], item.lineno - 1
                while row >= 1 and lines[row - 1].strip().startswith("#"):
                    above.insert(0, comments.get(row, ""))
                    row -= 1
                trailing = comments.get(item.lineno) if not lines[item.lineno - 1].strip().startswith("#") else None
                out[(node.name, item.target.id)] = " ".join([*above, *([trailing] if trailing else [])])
    return out


def _type(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(kind))
    if origin is tuple:
        return f"list of {_type(typing.get_args(kind)[0])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return f"{_type(inner[0])} or null"
    return getattr(kind, "__name__", str(kind))


def _default(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config_page() -> str:
    from rote.config import RunConfig

    comments = field_comments()
    rows: list[str] = []

    def walk(cls, instance, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], value, f"{prefix}{f.name}.")
                continue
            # A subclass that only changes a default (Phase2Config's epochs) documents it where it is declared.
            owner = next((c.__name__ for c in cls.__mro__ if comments.get((c.__name__, f.name))), cls.__name__)
            text = comments.get((owner, f.name), "").replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | {_type(hints[f.name])} | `{_default(value)}` | {text} |")

    walk(RunConfig, RunConfig(), "")
    return "\n".join([
        "# Configuration keys", "",
        "Every key of a run config (`rote run CONFIG --set KEY=VALUE`, `rote inject --set KEY=VALUE`), with its type,",
        "its default and what it does. Generated from `src/rote/config.py` by `python scripts/reference_docs.py`;",
        "`tests/test_docs.py` fails when this page and the code differ. Ranges and settings that only work together",
        "are checked by `rote.config_checks`; which keys an arm reads, by `rote.arms` (a key the arm does not read",
        "is an error). `phase1.*` and `phase2.*` share the training keys with different defaults.", "",
        "| key | type | default | what it does |", "|---|---|---|---|", *rows, ""])


def cli_page() -> str:
    from rote.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "",
             "Every `rote` subcommand and flag. Generated from `rote.cli.build_parser` by",
             "`python scripts/reference_docs.py`; `tests/test_docs.py` fails when this page and the code differ.",
             "Exit codes: `src/rote/errors.py`.", "", "```", parser.format_usage().strip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        lines += [f"## rote {name}", "", (helps.get(name) or "").strip(), "", "```", p.format_usage().strip(), "```", "",
                  "| argument | what it does |", "|---|---|"]
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            text = (action.help or "").replace("|", "\\|").replace("\n", " ")
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                text += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| {names} | {text} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare, write nothing")
    args = ap.parse_args(argv)
    stale = []
    for name, text in (("config", config_page()), ("cli", cli_page())):
        path = PAGES[name]
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"{', '.join(stale)}: not what the code says; run python scripts/reference_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
