"""Checkpoints: a plain Hugging Face folder (safetensors + tokenizer) plus the key-token record,
so `AutoModelForCausalLM.from_pretrained(folder)` loads it as it is."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rote.fileio import read_json
from rote.training import processes

KEY_RECORD = "rote_key_tokens.json"


def save_checkpoint(model, tokenizer, key_record: dict, path: str | Path) -> Path:
    """Write to `<path>.tmp` and rename, so a killed save never leaves a folder that looks complete.

    In several processes every process must call this; process 0 writes, the others wait for it. A
    sharded model (FSDP2: DTensor parameters) is first gathered into one full state dict (a collective);
    otherwise every process holds the whole model and process 0 writes its own."""
    path = Path(path)
    state = _full_state_dict(model) if processes.sharded(model) else None
    return processes.on_main(lambda: _write(model, tokenizer, key_record, path, state))


def _full_state_dict(model) -> dict:
    """The whole model's weights on process 0's CPU (empty elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _write(model, tokenizer, key_record: dict, path: Path, state: dict | None = None) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(tmp)
    (tmp / KEY_RECORD).write_text(json.dumps(key_record, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def read_key_record(path: str | Path) -> dict | None:
    return read_json(Path(path) / KEY_RECORD)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """`target` as the file `source`: a hard link where the file system allows (checkpoints are only
    ever replaced, never written in place, so the weights need not be stored twice), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def link_checkpoint(source: str | Path, path: str | Path) -> Path:
    """`path` as a copy of the checkpoint folder `source` (link_or_copy for each file), through a
    temporary folder and a rename, like save_checkpoint."""
    source, path = Path(source), Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(p for p in source.iterdir() if p.is_file()):
        link_or_copy(f, tmp / f.name)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path
