"""The base model's evaluation, measured once per inputs and reused. Pure: no torch.

Every run evaluates eval/base: the damage reference always (locality probes, teacher-forced argmax,
perplexity) and the facts' queries when `base` is in eval.stages; every cell of a study asks the
same of the same base model. The runner (rote.eval_stage.run_eval) keys that evaluation by everything
it reads (`stage_key` over the parts it gathers): the model folder's files (weights by content,
`model_digest`), the key tokens added and their initialisation, the facts, the queries, the
evaluation settings, the locality probes and paragraphs, the evaluation code (`code_digest`), the
libraries' versions and the processor (CPU model and kernels, or GPU). Its measurements
(predictions.jsonl, locality.jsonl and the perplexity record) are stored under <rote cache>/eval/<key>/ (`store`) and copied into a later run
that asks the same (`restore`); that run builds its summary from them as from fresh ones, so its
records are the same bytes, and its timing.json says `reused_from`.

An entry is written into a temporary folder, its `.done` marker last, and renamed into place, so a
killed run never leaves an entry that looks complete. ROTE_EVAL_CACHE=0 turns reuse off.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from rote.fileio import UnreadableFileError, read_json, write_json, write_text
from rote.names import DONE_FILE, FLUENCY_FILE, LOCALITY_FILE, PREDICTIONS_FILE

ENV = "ROTE_EVAL_CACHE"  # "0" (or false, no, off): evaluate every time, store nothing
PERPLEXITY_FILE = "perplexity.json"  # an entry's perplexity record (rote.evaluation.locality.perplexity)
KEY_FILE = "key.json"  # an entry's parts, for a person asking why two runs did or did not share it
MEASUREMENTS = (PREDICTIONS_FILE, LOCALITY_FILE, FLUENCY_FILE)  # copied between a stage folder and an entry
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# What can change a measurement besides its inputs: the evaluation code, what the eval stage asks of
# it (eval_stage: arguments, the damage measures' precision), how it encodes text (training/encode)
# and how the key tokens are added to the base model (training/models).
CODE = ("evaluation/*.py", "text.py", "eval_stage.py", "training/encode.py", "training/models.py")
LIBRARIES = ("torch", "transformers", "tokenizers")  # their kernels and generation change numbers


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def json_digest(obj) -> str:
    """sha256 of `obj` as sorted JSON (tuples as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def stage_key(parts: dict) -> str:
    return json_digest(parts)


def file_digest(path: Path, cache: Path | None) -> str:
    """sha256 of a file's content, remembered under <cache>/eval/file-hashes/ by the file's path,
    size, mtime and ctime (ctime cannot be set back by hand), so a 500 MB model is read once. With
    no cache (reuse off: store nothing) or one that cannot be written, it is read every time."""
    path = path.resolve()
    if cache is None:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    st = path.stat()
    stamp = [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    memo = cache / "eval" / "file-hashes" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        known = read_json(memo)
    except UnreadableFileError:  # a damaged memo is only a lost memo: read the file again, write it anew
        known = None
    if isinstance(known, dict) and known.get("stamp") == stamp:
        return known["sha256"]
    digest = file_digest(path, None)
    try:
        write_json(memo, {"stamp": stamp, "sha256": digest})
    except OSError:
        pass  # only a memo: the next run reads the file again
    return digest


def model_digest(folder: Path, cache: Path | None) -> dict:
    """The content of a model folder's files (those transformers reads: the top level), the weights
    apart from the rest (config, generation config, tokenizer)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)]
    return {"weights": json_digest({p.name: file_digest(p, cache) for p in weights}),
            "config_and_tokenizer": json_digest({p.name: file_digest(p, cache) for p in files if p not in weights})}


def model_folder(resolved: str) -> Path | None:
    """The folder a model was loaded from: a local folder, or a hub id's snapshot in the Hugging Face
    cache (the revision transformers loaded); None when it is in neither (nothing to key it by)."""
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(resolved, local_files_only=True))
    except OSError:
        return None


def code_digest() -> str:
    """sha256 over the files of CODE, each with its path under rote/: a change to scoring is a new key."""
    root = Path(__file__).resolve().parent.parent
    files = sorted({p for pattern in CODE for p in root.glob(pattern)})
    return json_digest({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})


def library_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------- entries of <cache>/eval


def lookup(cache: Path, key: str) -> Path | None:
    """The finished entry of `key`, or None."""
    entry = cache / "eval" / key
    return entry if (entry / DONE_FILE).is_file() else None


def restore(entry: Path, stage_dir: Path) -> dict:
    """Copy an entry's measurements into `stage_dir` (atomic writes, as every run file); returns
    its perplexity record."""
    for name in MEASUREMENTS:
        if (entry / name).is_file():
            write_text(stage_dir / name, (entry / name).read_text(encoding="utf-8"))
    return read_json(entry / PERPLEXITY_FILE)


def store(cache: Path, key: str, parts: dict, stage_dir: Path, perplexity: dict) -> Path | None:
    """Store `stage_dir`'s measurements as the entry of `key`; returns it, or None when the cache
    cannot be written (a note, not an error: the run's own records are complete). A second process
    that stored the same key first keeps its entry."""
    root = cache / "eval"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.partial-", dir=root))
    except OSError as err:
        print(f"[rote] note: evaluation not stored in {root}: {err}", file=sys.stderr)
        return None
    try:
        for name in MEASUREMENTS:
            if (stage_dir / name).is_file():
                shutil.copyfile(stage_dir / name, tmp / name)
        write_json(tmp / PERPLEXITY_FILE, perplexity)
        write_json(tmp / KEY_FILE, parts)
        write_json(tmp / DONE_FILE, {"stored": time.strftime("%Y-%m-%dT%H:%M:%S"), "from": str(stage_dir)})
        tmp.chmod(0o755)  # mkdtemp makes a private folder; the cache is an ordinary one
        os.rename(tmp, root / key)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if lookup(cache, key) is None:
            print(f"[rote] note: evaluation not stored in {root}: {err}", file=sys.stderr)
    return lookup(cache, key)
