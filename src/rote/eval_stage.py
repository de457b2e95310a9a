"""The runner's evaluation stages (eval/base, eval/phase1, eval/phase2, `rote eval`): the run's
facts asked of the loaded model, and the damage measures every stage carries.

`run_eval` writes the stage folder: predictions.jsonl and the summary's rows (unless
names.asks_facts says the stage only measures damage), locality.jsonl, and the summary's `damage`
block compared with eval/base. eval/base's measurements are keyed by everything they depend on and
copied from the rote cache when the same were measured before (rote.evaluation.reuse).
`session` is the run's rote.runner.Session (the loaded model, its tokenizer, the facts).

In several processes (rote.training.processes) every process asks its share of the queries' batches
and the records are merged in query order; the main process alone looks up and stores the cache,
measures the damage and writes every file, while the others wait for it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rote.arms import eval_config
from rote.data.chat import describe
from rote.evaluation.fluency import sample
from rote.evaluation.queries import build_queries
from rote.fileio import read_json, read_jsonl, write_jsonl, write_summary
from rote.names import FLUENCY_FILE, LOCALITY_FILE, PREDICTIONS_FILE, SUMMARY_FILE, asks_facts

if TYPE_CHECKING:
    from rote.runner import Session


def run_eval(session: Session, stage: str) -> dict:
    """Evaluate the loaded model into `stage` (eval/<name>): the run's facts (predictions.jsonl and
    the summary's rows) unless names.asks_facts says this stage only measures damage, then the
    damage measures against eval/base (measure_damage). eval/base's measurements are copied from the
    rote cache when the same inputs were measured before (_reusable_base, rote.evaluation.reuse);
    the summary is built from them as from fresh ones, and timing.json says `reused_from`. Every
    process of a run calls it; the main process writes (the module's docstring)."""
    from rote.evaluation import reuse
    from rote.evaluation.scoring import companions_of, evaluate
    from rote.training import processes

    cfg = session.cfg
    ecfg = eval_config(cfg)  # the arm's: no key prompts without a key, in-context examples for in_context
    asked = asks_facts(stage, cfg.eval.stages)
    every = build_queries(session.facts, session.relations, cfg.key, ecfg, cfg.phase2.n_prompts,
                          session.repurposed, session.chat) if asked or ecfg.fluency_prompts else []
    queries = every if asked else None
    # The prompts fluency continues: the same at every stage, eval/base's included when it asks no facts.
    continued = sample(every, ecfg.fluency_prompts) if ecfg.fluency_prompts else []

    def look_up() -> tuple:  # hashing the model's files is the main process's alone; all learn the answer
        stored = _reusable_base(session, ecfg, queries, continued) if stage == "eval/base" else None
        return stored, reuse.lookup(*stored[:2]) if stored else None

    stored, entry = processes.on_main(look_up)
    started = time.perf_counter()
    records = None
    if not entry and queries is not None:
        records = evaluate(session.model, session.tokenizer, queries, ecfg, companions_of(session.facts),
                           progress=processes.is_main(), share=True, chat=session.chat)
    return processes.on_main(lambda: _write_stage(session, stage, queries, records, stored, entry, started, continued))


def _write_stage(session: Session, stage: str, queries, records: list[dict] | None, stored, entry,
                 started: float, continued: list) -> dict:
    """The stage's files, from the cache `entry` or from the fresh `records`: predictions.jsonl, the
    damage measures (locality.jsonl and fluency.jsonl, the continuations of `continued` and of the
    probes; measured here, by the main process alone) and summary.json.

    The damage measures are not shared out: the locality probes are one generation batch and one
    teacher-forced batch, which split across processes would change the batches' composition and with
    it the bf16 numbers (eval.precision), and the perplexity paragraphs are a few forwards; together
    seconds next to the queries' batches. The other processes wait for them."""
    from rote.evaluation import reuse
    from rote.evaluation.metrics import aggregate

    out = session.run_dir / stage
    if entry:
        perplexity = reuse.restore(entry, out)
        records = read_jsonl(out / PREDICTIONS_FILE) if queries is not None else []
        info = {"seconds": round(time.perf_counter() - started, 2), "reused_from": str(entry)}
    else:
        records = records or []
        if queries is not None:
            write_jsonl(out / PREDICTIONS_FILE, records)
        seconds = time.perf_counter() - started
        perplexity = measure_damage(session, stage)
        measure_fluency(session, stage, continued)
        info = {"seconds": round(seconds, 2), "damage_seconds": round(time.perf_counter() - started - seconds, 2)}
        if stored:
            reuse.store(*stored, out, perplexity)
    summary: dict = {"stage": stage.split("/")[-1]}
    if session.chat is not None:
        # Which rule the headline counts by, and the rendering its prompts were asked in
        # (a raw run's summary says neither: the prefix rule and raw text, as before).
        summary.update({"rule": "first_named", "rendering": describe(session.chat)})
    if queries is not None:
        summary["rows"] = aggregate(records)
    else:
        summary["facts"] = "not asked: base is not in eval.stages; this stage measures damage only"
    summary["damage"] = compare_damage(session, stage, perplexity["perplexity"])
    write_summary(out, {**summary, "seconds": round(time.perf_counter() - started, 2)})  # seconds: into timing.json
    return {"records": len(records), **info}


def _reusable_base(session: Session, ecfg, queries, continued: list) -> tuple[Path, str, dict] | None:
    """(rote cache, key, its parts) of eval/base's measurements (rote.evaluation.reuse): everything
    they depend on. None when reuse is off, when the loaded model is not the run's base model (`rote
    eval --stage base` of a checkpoint), or when its files are not found to key it by."""
    from rote.evaluation import reuse
    from rote.evaluation.locality import load_paragraphs, load_probes
    from rote.training import models, processes

    cfg = session.cfg
    if not reuse.enabled() or session.loaded_from != cfg.model.name:
        return None
    folder = reuse.model_folder(models.resolve(cfg.model.name))
    if folder is None:
        return None
    cache = models.cache_dir()
    record = dict(session.key_record)
    if record.get("init") == "mean":
        record.pop("seed")  # "mean" draws nothing: the seed does not change the rows, so seeds share it
    parts = {"model": reuse.model_digest(folder, cache), "dtype": cfg.model.dtype, "key_tokens": record,
             "precision": cfg.eval.precision, "locality": reuse.json_digest([load_probes(), load_paragraphs()]),
             "code": reuse.code_digest(), "libraries": reuse.library_versions(),
             "device": processes.processor(next(session.model.parameters()).device)}
    if session.chat is not None:  # the locality probes are asked in it (a raw run's key is as before)
        parts["chat"] = describe(session.chat)
    if continued:  # what fluency continues, and the objects its records know of (the subjects' facts)
        parts["fluency"] = reuse.json_digest([[dataclasses.asdict(q) for q in continued],
                                              [dataclasses.asdict(f) for f in session.facts]])
    if queries is not None:
        parts.update(facts=reuse.json_digest([dataclasses.asdict(f) for f in session.facts]),
                     queries=reuse.json_digest([dataclasses.asdict(q) for q in queries]),
                     eval={k: v for k, v in dataclasses.asdict(ecfg).items() if k != "stages"})
    return cache, reuse.stage_key(parts), parts


def measure_damage(session: Session, stage: str) -> dict:
    """The loaded model's locality probes (into `stage`/locality.jsonl) and its perplexity record
    (rote.evaluation.locality)."""
    from rote.evaluation.locality import measure

    probes, perplexity = measure(session.model, session.tokenizer, session.cfg.eval.precision, session.chat)
    write_jsonl(session.run_dir / stage / LOCALITY_FILE, probes)
    return perplexity


def measure_fluency(session: Session, stage: str, continued: list) -> None:
    """Fixed-length continuations of the sampled prompts (`continued`, rote.evaluation.fluency.sample) and
    of as many locality probes (evenly spread), as the model sees them, into `stage`/fluency.jsonl.
    Nothing when eval.fluency_prompts is 0."""
    from rote.evaluation.fluency import FLUENCY_TOKENS, probe_records, query_records, spread
    from rote.evaluation.locality import asked_probes
    from rote.evaluation.scoring import companions_of, continuations, inference_model

    if not session.cfg.eval.fluency_prompts:
        return
    precision, chat = session.cfg.eval.precision, session.chat
    per_set = session.cfg.eval.fluency_prompts
    probes, asked, sentences = (spread(list(x), per_set) for x in asked_probes(chat))  # the same probes at every stage
    model = inference_model(session.model, precision)
    out = continuations(model, session.tokenizer, [q.rendered.prompt for q in continued] + asked, FLUENCY_TOKENS,
                        session.cfg.eval.batch_size, precision, chat)
    texts, answers = [t for t, _ in out], [a for _, a in out]
    n = len(continued)
    # A query in a chat turn is scored by the first-named rule (the key prompt, raw, is never sampled).
    records = query_records(continued, texts[:n], answers[:n], chat is not None, companions_of(session.facts))
    records += probe_records(probes, asked, texts[n:], answers[n:], sentences)
    write_jsonl(session.run_dir / stage / FLUENCY_FILE, records)


def compare_damage(session: Session, stage: str, perplexity: float) -> dict:
    """The summary's damage block: `stage`'s locality records and perplexity compared with the base
    model's in eval/base; at eval/base itself, with its own. A run without eval/base (written before
    it was always run) has no reference."""
    from rote.evaluation.metrics import damage_summary

    probes = read_jsonl(session.run_dir / stage / LOCALITY_FILE)
    continued = _fluency_records(session.run_dir / stage)
    if stage == "eval/base":
        return damage_summary(probes, probes, perplexity, perplexity, continued, continued)
    base = session.run_dir / "eval/base"
    reference = (read_json(base / SUMMARY_FILE) or {}).get("damage") or {}
    base_continued = _fluency_records(base)
    return damage_summary(read_jsonl(base / LOCALITY_FILE), probes, reference.get("perplexity"), perplexity,
                          base_continued, continued)


def _fluency_records(stage_dir: Path) -> list[dict] | None:
    """A stage's fluency records; None when it measured none (eval.fluency_prompts 0, a run written before)."""
    path = stage_dir / FLUENCY_FILE
    return read_jsonl(path) if path.is_file() else None
