"""`rote probe RUN`: hidden states at named token positions, and their geometry across a run's stages.

    rote probe runs/demo [--layers 0,5,10] [--max-facts 20]

The paper's evidence that the model reinterprets memorized data is geometric: key-token states
cluster by relation during memorization, and after phase 2 they point the way the natural prompts
do, but not the way unrelated prompts do. This module measures both on every stage model a run
left behind (base model + key tokens, saved phase-1 epochs, phase-1 and phase-2 checkpoints) and
writes `probe/geometry.json`; rote.report.probe draws it (and never imports torch).

Positions are named, and resolved from character spans (`templates.Rendered`) through the
tokenizer's offsets, never by searching for strings:
    key           the last token of the key (the key token itself when key.style is `token`)
    subject_last  the last token of the subject
    prompt_last   the last token of the prompt, where the object is predicted
Layer 0 is the embedding output; layer i (1..L) is the output of block i, as Hugging Face's
`output_hidden_states` returns them (for Llama and Qwen the last one is after the final norm).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rote.config import KeyConfig, RunConfig, read_run_config
from rote.data.facts import Fact, Relation, read_facts
from rote.data.factset import relations_of
from rote.data.templates import Rendered, key_tokens, render_key, render_prompt
from rote.errors import RoteError
from rote.names import PROBED_PROMPT_SETS, SUMMARY_SPLITS
from rote.probe.geometry import alignment, pca_2d, relation_separation
from rote.training.encode import token_span

POSITIONS = ("key", "subject_last", "prompt_last")
PROMPTS_PER_SET = 3  # the first few prompts of each set: enough for a stable mean, cheap on CPU


class ProbeError(RoteError, ValueError):
    """A probe that cannot be computed as asked; the message names the offending value."""
    exit_code = 2


# ---------------------------------------------------------------- positions and hidden states


def token_positions(tokenizer, rendered: Rendered, positions: list[str]) -> tuple[list[int], dict[str, int]]:
    """Token ids of `rendered.prompt` and, per named position, its token index in those ids."""
    enc = tokenizer(rendered.prompt, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    where: dict[str, int] = {}
    for name in positions:
        if name == "prompt_last":
            where[name] = len(ids) - 1
        elif name == "subject_last":
            where[name] = token_span(offsets, rendered.subject_span)[1] - 1
        elif name == "key":
            if rendered.key_span is None:
                raise ProbeError(f"position 'key' asked of {rendered.prompt!r}, which has no key")
            where[name] = token_span(offsets, rendered.key_span)[1] - 1
        else:
            raise ProbeError(f"unknown position {name!r} (known: {', '.join(POSITIONS)})")
    return ids, where


def n_states(model) -> int:
    """How many hidden states the model returns: the embeddings plus one per block."""
    return model.config.get_text_config().num_hidden_layers + 1


def resolve_layers(model, layers: list[int] | None) -> list[int]:
    """`None` -> every layer; negative indices count from the end; out of range is an error."""
    n = n_states(model)
    if layers is None:
        return list(range(n))
    out = []
    for layer in layers:
        if not -n <= layer < n:
            raise ProbeError(f"layer {layer} is out of range: the model has layers 0..{n - 1} (0 = embeddings)")
        out.append(layer % n)
    return out


@torch.no_grad()
def hidden_states(model, tokenizer, rendered: list[Rendered], positions: list[str], layers: list[int] | None = None,
                  batch_size: int = 32, precision: str = "bf16") -> dict[str, np.ndarray]:
    """Hidden states of every text at every named position and layer.

    Returns {position: float32 array (n, n_layers, d)}, rows in the order of `rendered`, layers in
    the order of `resolve_layers(model, layers)`. Batches are right-padded: with causal attention a
    token never sees the padding after it, and the positions index each unpadded row as it is.
    `precision` "bf16" runs under bf16 autocast (fast on CPUs with AMX and on GPUs); "fp32" does not.
    """
    if precision not in ("bf16", "fp32"):
        raise ProbeError(f"unknown precision {precision!r} (use bf16 or fp32)")
    if not rendered:
        raise ProbeError("no texts to probe")
    layers = resolve_layers(model, layers)
    device = next(model.parameters()).device
    encoded = [token_positions(tokenizer, r, positions) for r in rendered]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths together: less padding
    out = {p: np.zeros((len(rendered), len(layers), model.config.get_text_config().hidden_size), np.float32)
           for p in positions}
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        width = max(len(encoded[i][0]) for i in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, i in enumerate(rows):
            ids[b, : len(encoded[i][0])] = torch.tensor(encoded[i][0])
            mask[b, : len(encoded[i][0])] = 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            # logits_to_keep=1: the vocabulary projection is the costliest matmul and nothing here needs it.
            states = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                           use_cache=False, logits_to_keep=1).hidden_states
        if len(states) != n_states(model):
            raise ProbeError(f"the model returned {len(states)} hidden states, expected {n_states(model)}")
        picked = torch.stack([states[l] for l in layers], dim=1)  # (B, n_layers, T, d)
        batch_rows = torch.arange(len(rows))
        for p in positions:
            at = torch.tensor([encoded[i][1][p] for i in rows])
            out[p][rows] = picked[batch_rows, :, at].float().cpu().numpy()  # (B, n_layers, d)
    return out


# ---------------------------------------------------------------- what to probe


def pick_facts(facts: list[Fact], max_facts: int | None) -> list[Fact]:
    """At most `max_facts` facts per relation, alternating phase-2 and held-out facts so that both
    splits stay represented; all facts when `max_facts` is None."""
    if max_facts is None:
        return facts
    if max_facts < 2:
        raise ProbeError(f"max_facts must be at least 2 (facts per relation), got {max_facts}")
    out = []
    for relation in dict.fromkeys(f.relation for f in facts):
        by_split = [[f for f in facts if f.relation == relation and f.split == s] for s in ("phase2", "heldout")]
        mixed = [f for pair in zip(*by_split) for f in pair]
        longer = max(by_split, key=len)
        out += (mixed + longer[len(mixed) // 2:])[:max_facts]
    return out


def probe_texts(facts: list[Fact], relations: dict[str, Relation], key: KeyConfig,
                per_set: int = PROMPTS_PER_SET) -> tuple[list[Rendered], np.ndarray, list[str]]:
    """Every text to probe: first each fact's `{subject} {key}` text (rows 0..n-1, in fact order),
    then its first `per_set` train, English test and unrelated prompts.
    Returns (texts, owner (m,) int: the fact index of each text, kind: "key" or a prompt set per text)."""
    texts = [render_key(f, relations[f.relation], key) for f in facts]
    owner, kind = list(range(len(facts))), ["key"] * len(facts)
    for i, f in enumerate(facts):
        rel = relations[f.relation]
        for name, templates in (("train", rel.train_prompts), ("test", rel.test_prompts["en"]),
                                ("unrelated", rel.unrelated_prompts)):
            for t in templates[:per_set]:
                texts.append(render_prompt(f, t))
                owner.append(i)
                kind.append(name)
    return texts, np.array(owner), kind


def stage_sources(run_dir: Path, cfg: RunConfig) -> list[tuple[str, str, bool]]:
    """(stage, model folder or name, whether to add key tokens) for every stage model that exists."""
    out = [("base", cfg.model.name, True)]
    epochs = sorted(p for p in (run_dir / "phase1" / "epochs").glob("epoch[0-9][0-9][0-9]") if (p / "config.json").is_file())
    out += [(p.name, str(p), False) for p in epochs]
    phase1 = run_dir / "phase1" / "checkpoint"
    if not phase1.is_dir() and cfg.phase2.checkpoint:  # phase 2 started from another run's phase 1
        phase1 = Path(cfg.phase2.checkpoint)
    out += [(name, str(p), False) for name, p in (("phase1", phase1), ("phase2", run_dir / "phase2" / "checkpoint"))
            if (p / "config.json").is_file()]
    return out


def load_stage(cfg: RunConfig, relations: dict[str, Relation], source: str, add_keys: bool):
    """Model and tokenizer of one stage; the base model gets its key tokens exactly as the run's
    Session.load gave them (rote.training.models.load_stage: same tokens in the same order, same init and seed)."""
    from rote.training import models
    tokens = key_tokens(relations.values(), cfg.key) if add_keys else None
    model, tokenizer, _ = models.load_stage(source, cfg.model.dtype, tokens, cfg.key.init, cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------- geometry of one stage


def stage_geometry(states: np.ndarray, owner: np.ndarray, kind: list[str], facts: list[Fact]) -> dict:
    """Separation and alignment at every probed layer of one stage.

    states: (m, n_layers, d), one row per text of `probe_texts` (key texts first). Returns lists
    indexed like the layers: separation {intra, inter, separation} over the key-text states
    (None with a single relation), and alignment[split][prompt set], the mean over facts of each
    fact's mean cosine between its key-text state and its prompts' states."""
    n = len(facts)
    labels = [f.relation for f in facts]
    key = states[:n]  # (n, n_layers, d)
    kinds = np.array(kind)
    split_of = np.array([f.split for f in facts])
    per_fact = {}  # prompt set -> (n, n_layers): each fact's mean cosine with its prompts
    for name in PROBED_PROMPT_SETS:
        rows = np.flatnonzero(kinds == name)
        cos = np.stack([alignment(key[owner[rows], l], states[rows, l]) for l in range(states.shape[1])], axis=1)
        counts = np.bincount(owner[rows], minlength=n)[:, None]
        sums = np.zeros((n, states.shape[1]))
        np.add.at(sums, owner[rows], cos)
        per_fact[name] = sums / np.maximum(counts, 1)
    aligned = {}
    for split in SUMMARY_SPLITS:
        chosen = np.ones(n, bool) if split == "all" else split_of == split
        if chosen.any():
            aligned[split] = {name: per_fact[name][chosen].mean(axis=0).tolist() for name in PROBED_PROMPT_SETS}
    separation = None
    if len(set(labels)) > 1:
        rows = [relation_separation(key[:, l], labels) for l in range(states.shape[1])]
        separation = {k: [r[k] for r in rows] for k in ("intra", "inter", "separation")}
    return {"separation": separation, "alignment": aligned}


def choose_layer(geometry: dict, layers: list[int]) -> tuple[int, str]:
    """The headline layer: highest phase-2 separation among layers >= 1 (at layer 0 the key text's
    last state is the key embedding itself, the same for every fact of a relation), else the middle."""
    phase2 = geometry.get("phase2", {}).get("separation")
    candidates = [i for i, layer in enumerate(layers) if layer > 0] or list(range(len(layers)))
    if phase2 is not None:
        best = max(candidates, key=lambda i: phase2["separation"][i])
        return layers[best], "highest phase-2 relation separation (layers >= 1)"
    return layers[candidates[len(candidates) // 2]], "middle probed layer (no phase-2 separation)"


# ---------------------------------------------------------------- a whole run


def probe_run(run_dir: str | Path, layers: list[int] | None = None, max_facts: int | None = None,
              per_set: int = PROMPTS_PER_SET, headline_layer: int | None = None, batch_size: int = 32,
              quiet: bool = True) -> dict:
    """Probe every stage model of a run; write probe/geometry.json and return its dict (the figures are
    rote.report.probe.write_figures: `rote probe` draws them next).

    Every number is at position `prompt_last`, which in `{subject} {key}` text (key.position
    middle) is the key token itself. `max_facts` caps the facts per relation."""
    from rote.fileio import write_json
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    relations = relations_of(cfg)
    facts = pick_facts(read_facts(run_dir / "facts.jsonl"), max_facts)
    texts, owner, kind = probe_texts(facts, relations, cfg.key, per_set)
    sources = stage_sources(run_dir, cfg)
    # Phase 2 first: its separation picks the layer whose states the PCA of every stage is drawn at,
    # so no stage's (texts x layers x d) states need to be kept while the others are computed.
    ordered = sorted(sources, key=lambda s: s[0] != "phase2")
    stages: dict[str, dict] = {}
    chosen = layer_ids = None
    for name, source, add_keys in ordered:
        started = time.perf_counter()
        model, tokenizer = load_stage(cfg, relations, source, add_keys)
        layer_ids = resolve_layers(model, layers)
        states = hidden_states(model, tokenizer, texts, ["prompt_last"], layer_ids, batch_size)["prompt_last"]
        stages[name] = {"source": source, **stage_geometry(states, owner, kind, facts)}
        if chosen is None and headline_layer is not None:
            chosen = resolve_layers(model, [headline_layer])[0], "asked for"
            if chosen[0] not in layer_ids:
                raise ProbeError(f"headline layer {headline_layer} is not among the probed layers {layer_ids}")
        chosen = chosen or choose_layer(stages, layer_ids)
        del model  # one stage's model in memory at a time
        # PCA of unit vectors: the geometry the cosines measure. Raw states let a few
        # massive-activation outliers (norms in the thousands) take the whole first component.
        at_layer = states[:, layer_ids.index(chosen[0])]
        coords, explained = pca_2d(at_layer / np.linalg.norm(at_layer, axis=1, keepdims=True))
        stages[name]["pca"] = {"explained": explained.tolist(), "points": np.round(coords, 4).tolist()}
        if not quiet:
            print(f"[probe] {name}: {len(texts)} texts x {len(layer_ids)} layers in {time.perf_counter() - started:.0f} s",
                  flush=True)
    order = [s[0] for s in sources]
    geometry = {
        "run": str(run_dir), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": cfg.model.name,
        "subjects": cfg.data.subjects, "key_position": cfg.key.position,  # which token prompt_last is in the key text
        "position": "prompt_last", "layers": layer_ids, "stages": {s: stages[s] for s in order},
        "headline": {"layer": chosen[0], "position": "prompt_last", "chosen_by": chosen[1]},
        "facts": {s: sum(s in ("all", f.split) for f in facts) for s in SUMMARY_SPLITS},
        "relations": list(relations), "prompts_per_set": per_set,
        "pca_labels": {"relation": [facts[i].relation for i in owner], "kind": kind},
    }
    write_json(run_dir / "probe" / "geometry.json", geometry)
    return geometry

