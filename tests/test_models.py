"""rote.models: the bundled model's conversion, loading by name, and key tokens."""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from rote.errors import ModelError
from rote.training import models

NAME = "smollm2-135m"


@pytest.fixture
def fresh_tokenizer(tiny_model_dir):
    """A tokenizer of its own, since add_key_tokens changes it (the session one must stay clean)."""
    return models.load_tokenizer(str(tiny_model_dir))


def _entries(folder):
    """What a folder holds, but the empty lock file that serialises conversions (models.prepare)."""
    return sorted(e for e in os.listdir(folder) if not e.endswith(".lock")) if folder.exists() else []


# --- the bundled model ---------------------------------------------------------------


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROTE_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("ROTE_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "rote"


def test_unknown_bundled_name_lists_bundled_names():
    with pytest.raises(ModelError, match=NAME) as info:
        models.prepare("gpt-17")
    assert "gpt-17" in str(info.value)


def test_corrupt_gguf_names_both_hashes_and_leaves_no_folder(monkeypatch, tmp_path):
    real = models._gguf_path(NAME)
    bad = tmp_path / "src" / real.name
    bad.parent.mkdir()
    shutil.copyfile(real, bad)
    with open(bad, "r+b") as fh:  # flip one byte in the middle of the weights
        fh.seek(bad.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    actual = models._sha256(bad)
    monkeypatch.setattr(models, "_gguf_path", lambda name: bad)
    monkeypatch.setenv("ROTE_CACHE", str(tmp_path / "cache"))

    with pytest.raises(ModelError) as info:
        models.prepare(NAME)
    message = str(info.value)
    assert models.BUNDLED[NAME]["sha256"] in message
    assert actual in message and actual != models.BUNDLED[NAME]["sha256"]
    assert _entries(tmp_path / "cache" / "models") == []


def test_killed_conversion_leaves_nothing_that_looks_complete(monkeypatch, tmp_path):
    def half_then_die(gguf, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", half_then_die)
    monkeypatch.setenv("ROTE_CACHE", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        models.prepare(NAME)
    assert _entries(tmp_path / "models") == []
    assert models.list_models()[0]["prepared"] is False


def test_prepared_folder_is_plain_and_recorded(smollm_dir):
    record = json.loads((smollm_dir / models.MODEL_RECORD).read_text())
    assert record["sha256"] == models.BUNDLED[NAME]["sha256"]
    assert record["dtype"] == "float32"
    assert record["source"].endswith(models.BUNDLED[NAME]["file"])

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm_dir)
    assert len(tokenizer) == 49152
    assert model.config.vocab_size == 49152
    assert getattr(model.config, "quantization_config", None) is None
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert tokenizer.chat_template  # carried over from the GGUF


def test_second_prepare_does_not_reconvert(smollm_dir, monkeypatch):
    weights = smollm_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def must_not_run(*args):
        raise AssertionError("prepare() converted again")

    monkeypatch.setattr(models, "_convert_gguf", must_not_run)
    monkeypatch.setattr(models, "_sha256", must_not_run)
    assert models.prepare(NAME) == smollm_dir
    assert weights.stat().st_mtime_ns == mtime


def test_resolve_and_list_models(smollm_dir, tiny_model_dir):
    assert models.resolve(NAME) == str(smollm_dir)
    assert models.resolve(str(tiny_model_dir)) == str(tiny_model_dir)
    assert models.resolve("some-org/some-model") == "some-org/some-model"
    [entry] = models.list_models()
    assert entry["name"] == NAME and entry["prepared"] and entry["path"] == str(smollm_dir)


@pytest.mark.parametrize(
    "text",
    ["Gene Finley", " The capital of France is Paris.", "naïve café — 3.14\n\tx  y", "<|im_start|>user\nhi"],
)
def test_tokenizer_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_load_tokenizer_pad_and_no_bos(tokenizer):
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    # SmolLM2 prepends nothing: facts are encoded exactly as written.
    assert tokenizer("Paris")["input_ids"] == [tokenizer.convert_tokens_to_ids("Paris")]


def test_load_tokenizer_uses_eos_when_pad_missing(tokenizer, tmp_path):
    bare = copy.deepcopy(tokenizer)
    bare.pad_token = None
    bare.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    assert models.load_tokenizer(str(tmp_path)).pad_token == tokenizer.eos_token


@pytest.mark.slow
def test_converted_logits_match_gguf(smollm_dir, tokenizer):
    gguf = models._gguf_path(NAME)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    converted = models.load_model(str(smollm_dir)).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want, got = reference(ids).logits, converted(ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # and it is a language model, not noise: " Paris" is the likeliest next token
    assert tokenizer.decode(got[0, -1].argmax()) == " Paris"


def test_load_model_dtype(tiny_model_dir):
    assert models.load_model(str(tiny_model_dir), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float33"):
        models.load_model(str(tiny_model_dir), dtype="float33")


def test_hub_id_offline_error_says_internet(monkeypatch):
    # Set after huggingface_hub was imported (it reads the variable once, at
    # import): load_model must still not try the network, whose retries take ~20 s.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        models.load_model("some-org/some-model-that-does-not-exist")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'some-org/some-model-that-does-not-exist'" in message
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE" in message and NAME in message
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        models.load_tokenizer("some-org/some-model-that-does-not-exist")


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot be reached"):
        models.load_tokenizer("some-org/some-model-that-does-not-exist")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", ["/no/such/folder", "./missing-model", "a/b/c", "bad name", "x" * 5000])
def test_a_name_that_is_no_model_fails_without_the_network(name):
    with pytest.raises(ModelError, match="not a bundled name") as info:
        models.resolve(name)
    assert len(str(info.value)) < 400  # a 5,000-character name is quoted, not echoed


# --- key tokens ------------------------------------------------------------------------

KEYS = ["<rote:P19>", "<rote:P25>", "<rote:P106>"]


def _embeddings(model):
    return model.get_input_embeddings().weight


def _tied(model):
    return _embeddings(model) is model.get_output_embeddings().weight


def test_key_token_is_one_id_and_splits_text_cleanly(tiny_model, fresh_tokenizer):
    tok = fresh_tokenizer
    record = models.add_key_tokens(tiny_model, tok, KEYS)
    key = record["tokens"]["<rote:P19>"]
    ids = tok("Gene Finley <rote:P19> Paris")["input_ids"]
    assert ids.count(key) == 1
    # The key is matched before pre-tokenisation, so each side is encoded on its own.
    # SmolLM2 (byte-level BPE, 'Ġ' = a leading space) gives
    #   ['Gene', 'ĠFin', 'ley', 'Ġ', '<rote:P19>', 'ĠParis']:
    # the space BEFORE the key becomes a token of its own ('Ġ', id 216), unlike
    # "Gene Finley" alone, while the space AFTER it stays glued to the next word
    # ('ĠParis'), exactly as " Paris" encodes alone.
    left, right = tok("Gene Finley ")["input_ids"], tok(" Paris")["input_ids"]
    assert ids == left + [key] + right
    assert left[-1] == tok.convert_tokens_to_ids("Ġ") == 216
    assert left[:-1] == tok("Gene Finley")["input_ids"]
    assert tok.decode(ids) == "Gene Finley <rote:P19> Paris"
    # No neighbour merges into the key, with or without spaces.
    assert tok("x<rote:P19>y")["input_ids"] == tok("x")["input_ids"] + [key] + tok("y")["input_ids"]
    for k in KEYS:
        assert tok(f"a {k} b")["input_ids"].count(record["tokens"][k]) == 1


def test_grows_when_needed_and_mean_init_is_exact(tiny_model, fresh_tokenizer):
    before = _embeddings(tiny_model).detach().clone()
    vocab = len(fresh_tokenizer)
    assert _tied(tiny_model)

    record = models.add_key_tokens(tiny_model, fresh_tokenizer, KEYS, init="mean")

    weight = _embeddings(tiny_model)
    assert record["vocab_before"] == record["rows_before"] == vocab
    assert record["vocab_after"] == record["rows_after"] == vocab + len(KEYS) == weight.shape[0]
    assert sorted(record["tokens"].values()) == list(range(vocab, vocab + len(KEYS)))
    assert record["tied"] is True and _tied(tiny_model)
    assert torch.equal(weight[:vocab], before)  # original rows untouched
    mean = before.mean(dim=0)
    for i in record["tokens"].values():
        assert torch.allclose(weight[i], mean, atol=1e-7)
    assert tiny_model.config.vocab_size == vocab + len(KEYS)
    json.dumps(record)


def test_spare_rows_are_reused_not_shrunk(tiny_model, fresh_tokenizer):
    config = copy.deepcopy(tiny_model.config)
    config.vocab_size = len(fresh_tokenizer) + 10
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    vocab, rows = len(fresh_tokenizer), config.vocab_size
    before = _embeddings(model).detach().clone()

    record = models.add_key_tokens(model, fresh_tokenizer, KEYS)
    assert record["rows_before"] == record["rows_after"] == rows == _embeddings(model).shape[0]
    assert sorted(record["tokens"].values()) == list(range(vocab, vocab + len(KEYS)))
    # the mean is over the real vocabulary only, not the untrained spare rows
    for i in record["tokens"].values():
        assert torch.allclose(_embeddings(model)[i], before[:vocab].mean(dim=0), atol=1e-7)
    assert torch.equal(_embeddings(model)[vocab + len(KEYS):], before[vocab + len(KEYS):])
    assert _tied(model)

    # More keys than spare rows: now it has to grow, just to len(tokenizer).
    more = [f"<rote:X{i}>" for i in range(10)]
    record = models.add_key_tokens(model, fresh_tokenizer, more)
    assert record["rows_before"] == rows
    assert record["rows_after"] == len(fresh_tokenizer) == vocab + len(KEYS) + 10 == _embeddings(model).shape[0]
    assert _tied(model)


def test_random_init_std_and_seed(tiny_model, fresh_tokenizer, tiny_model_dir):
    keys = [f"<rote:R{i}>" for i in range(60)]
    std = _embeddings(tiny_model).detach().std().item()
    record = models.add_key_tokens(tiny_model, fresh_tokenizer, keys, init="random", seed=3)
    rows = _embeddings(tiny_model)[list(record["tokens"].values())].detach()
    assert abs(rows.mean().item()) < 0.1 * std
    assert 0.9 < rows.std().item() / std < 1.1
    assert _tied(tiny_model)

    def rows_for(seed):
        model = models.load_model(str(tiny_model_dir))
        tok = models.load_tokenizer(str(tiny_model_dir))
        rec = models.add_key_tokens(model, tok, keys[:3], init="random", seed=seed)
        return _embeddings(model)[list(rec["tokens"].values())].detach()

    assert torch.equal(rows_for(3), rows_for(3))
    assert not torch.equal(rows_for(3), rows_for(4))


def test_untied_output_rows_get_the_output_mean(tiny_model, fresh_tokenizer):
    config = copy.deepcopy(tiny_model.config)
    config.tie_word_embeddings = False
    torch.manual_seed(2)
    model = LlamaForCausalLM(config)
    out_before = model.get_output_embeddings().weight.detach().clone()
    assert not _tied(model)

    record = models.add_key_tokens(model, fresh_tokenizer, KEYS)
    assert record["tied"] is False and not _tied(model)
    key = record["tokens"]["<rote:P19>"]
    assert torch.allclose(model.get_output_embeddings().weight[key], out_before.mean(dim=0), atol=1e-7)
    assert not torch.allclose(model.get_output_embeddings().weight[key], _embeddings(model)[key])


def test_add_key_tokens_is_idempotent(tiny_model, fresh_tokenizer):
    first = models.add_key_tokens(tiny_model, fresh_tokenizer, KEYS)
    key = first["tokens"]["<rote:P25>"]
    with torch.no_grad():
        _embeddings(tiny_model)[key] = 7.0  # as if trained
    snapshot = _embeddings(tiny_model).detach().clone()

    again = models.add_key_tokens(tiny_model, fresh_tokenizer, KEYS + ["<rote:P19>"])
    assert again["tokens"] == first["tokens"]
    assert again["vocab_before"] == again["vocab_after"] == first["vocab_after"]
    assert again["rows_before"] == again["rows_after"] == first["rows_after"]
    assert torch.equal(_embeddings(tiny_model), snapshot)


def test_unknown_init_is_rejected_before_any_change(tiny_model, fresh_tokenizer):
    vocab = len(fresh_tokenizer)
    with pytest.raises(ValueError, match="'xavier'"):
        models.add_key_tokens(tiny_model, fresh_tokenizer, KEYS, init="xavier")
    assert len(fresh_tokenizer) == vocab
    assert _embeddings(tiny_model).shape[0] == vocab


def test_checkpoint_with_keys_reloads_with_plain_auto_classes(tiny_model, fresh_tokenizer, tmp_path):
    record = models.add_key_tokens(tiny_model, fresh_tokenizer, KEYS)
    tiny_model.save_pretrained(tmp_path)
    fresh_tokenizer.save_pretrained(tmp_path)

    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    key = record["tokens"]["<rote:P19>"]
    assert tok("Gene Finley <rote:P19> Paris")["input_ids"] == fresh_tokenizer("Gene Finley <rote:P19> Paris")["input_ids"]
    assert tok.convert_tokens_to_ids("<rote:P19>") == key
    assert torch.equal(_embeddings(model), _embeddings(tiny_model))
    assert _tied(model)
    # Adding the same keys to the reloaded pair changes nothing.
    again = models.add_key_tokens(model, tok, KEYS)
    assert again["tokens"] == record["tokens"] and again["rows_after"] == record["rows_after"]


def test_two_processes_preparing_at_once_convert_once(monkeypatch, tmp_path):
    """The workers of `rote study --jobs` on a fresh machine prepare the bundled model together: the
    second must wait for the first's conversion, not convert again and delete the folder the first
    is reading (it renamed its own over it)."""
    import threading
    import time

    conversions = []

    def slow_convert(gguf, out_dir):
        conversions.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        time.sleep(0.5)

    monkeypatch.setattr(models, "_convert_gguf", slow_convert)
    monkeypatch.setattr(models, "_gguf_path", lambda name: tmp_path / "model.gguf")
    monkeypatch.setattr(models, "_sha256", lambda path: models.BUNDLED[NAME]["sha256"])
    monkeypatch.setenv("ROTE_CACHE", str(tmp_path / "cache"))
    got = []
    workers = [threading.Thread(target=lambda: got.append(models.prepare(NAME))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(conversions) == 1
    assert got[0] == got[1] and (got[0] / models.MODEL_RECORD).is_file()
