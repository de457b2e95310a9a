"""Reading and writing rote's files: atomic writes, tolerant reads, stage markers. Pure: no torch.

Every file is written under a temporary name and renamed (`os.replace` is atomic), so a killed
process never leaves a half-written file under the real name. A stage's `.done` marker is written
last, after everything the stage produced; its wall-clock seconds go to `timing.json`, so that the
stage's `summary.json` holds only what a resumed run reproduces byte for byte.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from rote.errors import UnreadableFileError, read_utf8
from rote.names import DONE_FILE, SUMMARY_FILE, TIMING_FILE

TIMING_KEYS = ("seconds",)  # kept out of summaries (timing.json): they differ between two runs of one config


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename; creates the folder.
    The temporary name is the writer's own (process id and a random part): two processes writing
    one file at once (study workers keying the same model in the rote cache) each rename their
    own, and the last one wins, instead of one renaming the other's away and failing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write or rename; after the rename it is gone
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False))


def write_jsonl(path: str | Path, rows) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_json(path: str | Path):
    """A JSON file's content, or None when it does not exist (a stage not run yet). A file that is not
    JSON (damaged, cut short, edited) raises UnreadableFileError naming it, not json's traceback."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(read_utf8(path, UnreadableFileError))
    except json.JSONDecodeError as e:
        raise UnreadableFileError(f"{path}: not JSON ({e}); the file is damaged") from None


def read_jsonl(path: str | Path, torn_tail: bool = False) -> list[dict]:
    """One dict per non-empty line ([] when the file does not exist). With `torn_tail`, a last line
    that is not JSON is dropped: a file another process appends to (train.py's metrics.jsonl) may
    end in half a line; a bad line elsewhere is always an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in read_utf8(path, UnreadableFileError).splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if torn_tail and i == len(lines) - 1:
                break
            raise UnreadableFileError(f"{path}:{i + 1}: not JSON: {line[:80]!r}") from None
    return rows


# ---------------------------------------------------------------- stages of a run folder


def is_done(run_dir: str | Path, stage: str) -> bool:
    return (Path(run_dir) / stage / DONE_FILE).is_file()


def mark_done(run_dir: str | Path, stage: str, info: dict | None = None) -> None:
    write_json(Path(run_dir) / stage / DONE_FILE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **(info or {})})


def write_summary(out: str | Path, summary: dict) -> None:
    """A stage's summary.json holds only what it computed, so a resumed run writes the same bytes as
    an uninterrupted one; wall-clock times go to timing.json beside it."""
    write_json(Path(out) / SUMMARY_FILE, {k: v for k, v in summary.items() if k not in TIMING_KEYS})
    timing = {k: summary[k] for k in TIMING_KEYS if k in summary}
    if timing:
        write_json(Path(out) / TIMING_FILE, timing)


def read_summary(stage_dir: str | Path) -> dict | None:
    """A stage's summary.json with its timing.json merged in (None when there is no summary)."""
    summary = read_json(Path(stage_dir) / SUMMARY_FILE)
    return None if summary is None else {**(read_json(Path(stage_dir) / TIMING_FILE) or {}), **summary}


def read_seconds(stage_dir: str | Path) -> float | None:
    """A stage's wall-clock seconds: timing.json (summary.json or .done in runs written before it)."""
    for name in (TIMING_FILE, SUMMARY_FILE, DONE_FILE):
        seconds = (read_json(Path(stage_dir) / name) or {}).get("seconds")
        if isinstance(seconds, (int, float)):
            return seconds
    return None


def cache_dir() -> Path:
    """rote's cache (converted models, evaluation reuse, file hashes): $ROTE_CACHE, else ~/.cache/rote."""
    env = os.environ.get("ROTE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rote"
