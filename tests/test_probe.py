"""probe.py and probe_report.py: positions on the real tokenizer, hidden states on the tiny model,
and `probe_run` on a tiny smoke run (every stage, every layer, figures, report section, CLI)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rote import config

from rote.config import KeyConfig
from rote.data.facts import Fact, load_relation
from rote.data.templates import render_key, render_prompt
from rote.probe.hidden import ProbeError, hidden_states, pick_facts, probe_run, resolve_layers, token_positions
from rote.training import models

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.yaml"
FACT = Fact("P19:0000", "Gene Finley", "s0", "place_of_birth", "Paris", ("Paris", "Rome"), "phase2")


@pytest.fixture
def key_tokenizer(tiny_model_dir):
    """A fresh tokenizer with the place-of-birth key token added (never the shared session one)."""
    from tokenizers import AddedToken
    tok = models.load_tokenizer(str(tiny_model_dir))
    # As models.add_key_tokens adds it: special, never normalised or stripped.
    tok.add_tokens([AddedToken("<rote:P19>", special=True, normalized=False, lstrip=False, rstrip=False)],
                   special_tokens=True)
    return tok


def _piece(tok, ids, i):
    return tok.decode([ids[i]])


# ---------------------------------------------------------------- positions


def test_positions_in_key_text(key_tokenizer):
    rendered = render_key(FACT, load_relation("place_of_birth"), KeyConfig())  # "Gene Finley <rote:P19>"
    ids, at = token_positions(key_tokenizer, rendered, ["key", "subject_last", "prompt_last"])
    # "Gene" " Fin" "ley" " " "<rote:P19>": the subject is 3 tokens, a space token precedes the key.
    assert at == {"key": 4, "subject_last": 2, "prompt_last": 4}
    assert ids[4] == key_tokenizer.convert_tokens_to_ids("<rote:P19>")
    assert _piece(key_tokenizer, ids, 2) == "ley"


def test_positions_with_key_first(key_tokenizer):
    rendered = render_key(FACT, load_relation("place_of_birth"), KeyConfig(position="first"))  # "<rote:P19> Gene Finley"
    ids, at = token_positions(key_tokenizer, rendered, ["key", "subject_last", "prompt_last"])
    assert at == {"key": 0, "subject_last": 3, "prompt_last": 3}
    assert _piece(key_tokenizer, ids, 0) == "<rote:P19>" and _piece(key_tokenizer, ids, 3) == "ley"


def test_positions_with_subject_mid_sentence(tokenizer):
    rendered = render_prompt(FACT, "Where was {subject} born?")
    ids, at = token_positions(tokenizer, rendered, ["subject_last", "prompt_last"])
    # "Where" " was" " Gene" " Fin" "ley" " born" "?"
    assert at == {"subject_last": 4, "prompt_last": 6}
    assert _piece(tokenizer, ids, 4) == "ley" and _piece(tokenizer, ids, 6) == "?"
    assert tokenizer.decode(ids[2:5]) == " Gene Finley"


def test_key_position_needs_a_key(tokenizer):
    with pytest.raises(ProbeError, match="no key"):
        token_positions(tokenizer, render_prompt(FACT, "{subject} was born in"), ["key"])
    with pytest.raises(ProbeError, match="unknown position 'middle'"):
        token_positions(tokenizer, render_prompt(FACT, "{subject} was born in"), ["middle"])


# ---------------------------------------------------------------- hidden states


def _texts():
    templates = ["Where was {subject} born?", "{subject} was born in", "Q: In which city was {subject} born? A:"]
    facts = [FACT, Fact("P19:0001", "Ada", "s1", "place_of_birth", "Rome", ("Paris", "Rome"), "heldout")]
    return [render_prompt(f, t) for f in facts for t in templates]


def test_shapes_and_layer_zero_is_the_embedding(tiny_model, tokenizer):
    texts = _texts()
    out = hidden_states(tiny_model, tokenizer, texts, ["subject_last", "prompt_last"], None, batch_size=4)
    assert set(out) == {"subject_last", "prompt_last"}
    for states in out.values():
        assert states.shape == (len(texts), 3, 64) and states.dtype == np.float32  # 2 blocks + embeddings
    embed = tiny_model.get_input_embeddings().weight.detach().numpy()
    for row, r in enumerate(texts):
        ids, at = token_positions(tokenizer, r, ["subject_last", "prompt_last"])
        for p in at:
            np.testing.assert_array_equal(out[p][row, 0], embed[ids[at[p]]])


@pytest.mark.slow
def test_batched_equals_one_at_a_time(tiny_model, tokenizer):
    texts = _texts()  # lengths differ, so batches carry right padding
    batched = hidden_states(tiny_model, tokenizer, texts, ["prompt_last"], [1, -1], batch_size=6, precision="fp32")
    single = np.concatenate([hidden_states(tiny_model, tokenizer, [t], ["prompt_last"], [1, 2], batch_size=1,
                                           precision="fp32")["prompt_last"] for t in texts])
    assert batched["prompt_last"].shape == (len(texts), 2, 64)
    np.testing.assert_allclose(batched["prompt_last"], single, rtol=1e-4, atol=1e-5)
    # bf16 autocast (the default) still returns float32 and stays close.
    bf16 = hidden_states(tiny_model, tokenizer, texts, ["prompt_last"], [1, 2], batch_size=6)["prompt_last"]
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, single, atol=0.1)


def test_layers_are_checked(tiny_model):
    assert resolve_layers(tiny_model, None) == [0, 1, 2]
    assert resolve_layers(tiny_model, [-1, 0]) == [2, 0]
    with pytest.raises(ProbeError, match="layer 3 is out of range"):
        resolve_layers(tiny_model, [3])


def test_pick_facts_keeps_both_splits():
    facts = [Fact(f"P19:{i:04d}", f"S{i}", f"s{i}", rel, "Paris", ("Paris",), "phase2" if i % 4 == 0 else "heldout")
             for rel in ("a", "b") for i in range(8)]
    picked = pick_facts(facts, 3)
    assert [(f.relation, f.split) for f in picked] == [("a", "phase2"), ("a", "heldout"), ("a", "phase2"),
                                                       ("b", "phase2"), ("b", "heldout"), ("b", "phase2")]
    assert pick_facts(facts, None) == facts


# ---------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def probed(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe-run")
    from rote.report.probe import write_figures
    from rote.runner import run
    cfg = config.load(SMOKE, [f"model.name={tiny_model_dir}", f"out_dir={tmp}", "phase1.save_epochs=[1]"])
    run_dir = run(cfg, quiet=True)
    geometry = probe_run(run_dir)
    write_figures(run_dir)  # what `rote probe` does after probe_run
    return run_dir, geometry


@pytest.mark.slow
def test_probe_run_covers_every_stage_and_layer(probed):
    run_dir, geometry = probed
    assert json.loads((run_dir / "probe" / "geometry.json").read_text()) == geometry
    assert list(geometry["stages"]) == ["base", "epoch001", "phase1", "phase2"]
    assert geometry["layers"] == [0, 1, 2]
    assert geometry["facts"] == {"all": 12, "phase2": 6, "heldout": 6}
    assert geometry["headline"]["layer"] in (1, 2) and geometry["headline"]["position"] == "prompt_last"
    n_points = 12 * (1 + 3 + 3 + 3)  # facts x (key text + 3 train, 3 test, 3 unrelated prompts)
    assert len(geometry["pca_labels"]["kind"]) == len(geometry["pca_labels"]["relation"]) == n_points
    assert geometry["pca_labels"]["kind"][:12] == ["key"] * 12
    for stage, g in geometry["stages"].items():
        for values in g["separation"].values():
            assert len(values) == 3 and all(math.isfinite(v) for v in values), stage
        for split in ("all", "phase2", "heldout"):
            for p in ("train", "test", "unrelated"):
                assert len(g["alignment"][split][p]) == 3
                assert all(-1 <= v <= 1 for v in g["alignment"][split][p]), (stage, split, p)
        assert len(g["pca"]["points"]) == n_points and all(math.isfinite(x) for pt in g["pca"]["points"] for x in pt)
    # Mean-initialised key tokens are one vector: at layer 0 the base model cannot tell relations apart.
    assert geometry["stages"]["base"]["separation"]["separation"][0] == pytest.approx(0, abs=1e-6)
    for name in ("separation", "alignment", "pca"):
        png = run_dir / "probe" / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list((run_dir / "probe").rglob("*.tmp"))


@pytest.mark.slow
def test_summary_and_html(probed):
    from rote.report.probe import format_summary, probe_section_html
    run_dir, geometry = probed
    text = format_summary(geometry)
    assert "paper, Qwen2.5-1.5B" in text and "0.258" in text and "epoch001" in text
    section = probe_section_html(run_dir)
    assert section.startswith("<h2>Hidden-state geometry</h2>") and section.count("data:image/png;base64,") == 3
    assert probe_section_html(run_dir.parent / "no-such-run") == ""
    assert geometry["key_position"] == "middle" and "key-token states" in text and "the key token" in section
    first = format_summary({**geometry, "key_position": "first"})
    assert "relation separation of key-text states" in first and "key-token" not in first


def test_labels_say_which_token_is_read_when_the_key_comes_first():
    """With key.position: first the key text is `{key} {subject}`: its last token is the subject's,
    not the key token, and the labels say so (a geometry from before the position was recorded is
    the default, middle)."""
    from rote.report.probe import key_text
    assert key_text({"key_position": "first"}) == ("{key} {subject}", "the subject's last token, after the key token",
                                                    "key-text states")
    assert key_text({}) == key_text({"key_position": "middle"}) == ("{subject} {key}", "the key token", "key-token states")


@pytest.mark.slow
def test_probe_run_with_chosen_layers_and_facts(probed):
    run_dir, _ = probed
    geometry = probe_run(run_dir, layers=[0, -1], max_facts=2)
    assert geometry["layers"] == [0, 2] and geometry["headline"]["layer"] == 2
    assert geometry["facts"]["all"] == 4
    with pytest.raises(ProbeError, match="layer 5 is out of range"):
        probe_run(run_dir, layers=[5])


@pytest.mark.slow
def test_cli_probe(probed, capsys):
    from rote.cli import main
    run_dir, _ = probed
    assert main(["probe", str(run_dir), "--layers", "1,2", "--max-facts", "2"]) == 0
    out = capsys.readouterr().out
    assert "relation separation" in out and "paper, Qwen2.5-1.5B" in out
    assert main(["probe", str(run_dir), "--layers", "9"]) == 2
