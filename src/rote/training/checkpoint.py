"""Checkpoints: a plain Hugging Face folder (safetensors + tokenizer) plus the key-token record,
so `AutoModelForCausalLM.from_pretrained(folder)` loads it as it is."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

KEY_RECORD = "rote_key_tokens.json"


def save_checkpoint(model, tokenizer, key_record: dict, path: str | Path) -> Path:
    """Write to `<path>.tmp` and rename, so a killed save never leaves a folder that looks complete."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / KEY_RECORD).write_text(json.dumps(key_record, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def read_key_record(path: str | Path) -> dict | None:
    f = Path(path) / KEY_RECORD
    return json.loads(f.read_text()) if f.is_file() else None
