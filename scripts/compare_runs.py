"""List the record files that differ between two run folders (timings aside).

    python scripts/compare_runs.py RUN_A RUN_B

Compared byte for byte: facts.jsonl, splits.json, key_tokens.json, every summary.json and every
predictions.jsonl; metrics.jsonl (each training step) with its wall-clock fields dropped. Not
compared: config.yaml (it records the rote version, commit and time), timing.json, .done,
checkpoints and the report. Exit 0 when every record file is the same in both, 1 otherwise.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SAME_BYTES = ("facts.jsonl", "splits.json", "key_tokens.json", "summary.json", "predictions.jsonl")
CLOCK = {"seconds", "tokens_per_s", "elapsed", "time", "wall_s"}  # per-step wall-clock fields of metrics.jsonl


def record_files(run_dir: Path) -> set[str]:
    names = set(SAME_BYTES) | {"metrics.jsonl"}
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and p.name in names and "checkpoint" not in p.parts}


def _content(path: Path) -> object:
    if path.name != "metrics.jsonl":
        return path.read_bytes()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in CLOCK} for row in rows]


def compare(a: Path, b: Path) -> list[str]:
    """One line per record file that is missing on one side or differs."""
    in_a, in_b = record_files(a), record_files(b)
    out = [f"only in {a}: {name}" for name in sorted(in_a - in_b)]
    out += [f"only in {b}: {name}" for name in sorted(in_b - in_a)]
    out += [f"differs: {name}" for name in sorted(in_a & in_b) if _content(a / name) != _content(b / name)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (Path(x) for x in argv)
    differences = compare(a, b)
    for line in differences:
        print(line)
    n = len(record_files(a) | record_files(b))
    print(f"{n} record files, {len(differences)} differ" if differences else f"{n} record files, all identical")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
