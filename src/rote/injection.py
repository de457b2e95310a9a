"""`rote inject`: teach a model your own facts by memorize-then-generalize, and export it.

    rote inject my_facts.jsonl --model smollm2-135m --out injected/ [--relations my_relations.yaml]
                [--conflicts known_otherwise.jsonl] [--phase2-fraction 0.1] [--no-baseline]
                [--overwrite] [--set phase1.lr=3e-4 ...]

    import rote
    rote.inject("my_facts.jsonl", model="smollm2-135m", out="injected/")  # -> the card's summary

Steps, each resumable (the same command continues an interrupted injection):
1. read and check the input (`rote.data.userdata`): any bad row or relation stops here, naming the
   file, line and value, before a model is loaded or anything is written;
2. write the facts (seeded phase-2 split: about 10% per relation, at least 1) into `<out>/run/`
   and drive `rote.runner`: phase 1 memorizes every fact with key tokens until key-token
   accuracy reaches 1.0, phase 2 trains the phase-2 facts with the relations' training prompts,
   evaluation asks about every fact (training, unseen and other-language prompts) and, as in
   every run, measures damage (locality probes, held-out perplexity: rote.evaluation.locality)
   of the base model, of the model after phase 1 alone and of the injected model;
3. the baseline: a run of arm `plain_finetune` (rote.arms) in `<out>/run/baseline/`: plain
   fine-tuning of the base model on all facts with the same training prompts, for the method
   run's supervised tokens, evaluated the same way (its damage in `run/baseline/eval/phase1`);
4. export `<out>/`: the phase-2 checkpoint as a plain Hugging Face folder, `card.md`, `card.json`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import yaml

import rote
from rote import config as config_mod
from rote import runner
from rote.arms import eval_config
from rote.config import RunConfig
from rote.data.facts import DataError, Fact
from rote.data.factset import short_of_validation_prompts
from rote.data.userdata import MIN_OPTIONS, Input, build_facts, load_input, phase2_count
from rote.errors import ConfigError, RoteError, RunError, quote
from rote.fileio import is_done, mark_done, read_json, write_json, write_jsonl, write_text
from rote.names import CHECKPOINT_DIR, SPLITS_FILE, SUMMARY_FILE
from rote.text import identity
from rote.lock import LOCK_FILE, hold
from rote.report.card import build_card, format_card, summary

# Settings suited to injecting a few dozen facts into a small model without breaking what it knew
# (the `locality` study, docs/results/locality, and its inject-example study: LOG.md, 2026-12-01):
# phase 1 memorizes until every key-token prompt is answered (lr 2e-4, batch 8, at most 40 epochs),
# training only the MLPs and the key tokens' embedding rows, with general text and well-known facts
# held at the base model's own next-token distributions (replay, known facts: rote.levers); phase 2
# trains the few phase-2 facts with 5 training prompts each at lr 5e-5 for at most 5 epochs, stopping
# once 2 more of their training prompts (validation) stop improving and keeping the best epoch (more
# phase 2 overfits the few phase-2 facts), with contrast questions about the phase-2 people, replay
# and known facts held at the base model. Evaluation of phase 1 (the control) and phase 2 with 5
# prompts per set and 10 multiple-choice options.
# `--set` overrides any of it; PAPER_RECIPE gives the paper's method without the levers.
DEFAULTS = {
    "seed": 0,
    # An injected model is asked as its users will ask it: under its chat template when it has one.
    "model": {"chat_template": "auto"},
    "data": {"n_options": 10},
    "phase1": {"until": "memorized", "epochs": 40, "lr": 2e-4, "batch_size": 8, "warmup_steps": 5,
               "update": {"modules": ["mlp"], "embeddings": "key_rows"},
               "preserve": {"replay": 64, "known_facts": 32, "batch_size": 4}},
    "phase2": {"epochs": 5, "lr": 5e-5, "batch_size": 8, "until": "validation",
               "preserve": {"contrast": 6, "replay": 32, "known_facts": 32}},
    "eval": {"stages": ["phase1", "phase2"], "prompts_per_set": 5},
}
# The injection defaults before the levers (the paper's method: every weight at lr 3e-4, no anchors),
# as `--set` overrides: what `rote inject` did until the locality study, kept for comparison.
PAPER_RECIPE = ("phase1.lr=3e-4", "phase2.until=epochs", "phase1.update.modules=[]", "phase1.update.embeddings=all",
                "phase1.preserve.replay=0", "phase1.preserve.known_facts=0", "phase2.preserve.contrast=0",
                "phase2.preserve.replay=0", "phase2.preserve.known_facts=0")
PHASE2_PROMPTS = 5  # training prompts per phase-2 fact (fewer if a relation has fewer)
# Keys `rote inject` sets from its input and flags; `--set` may not change them.
DERIVED = ("name", "out_dir", "model.name", "data.relations", "data.relations_file", "data.subjects",
           "data.facts_per_relation", "data.phase2_facts", "phase2.checkpoint", "arm")
RUN = "run"  # the run directory inside --out
CARD_FILES = ("card.md", "card.json")


class InjectError(RoteError, RuntimeError):
    """An output folder that cannot be used as asked (the message says why and what to do)."""
    exit_code = 3


# ---------------------------------------------------------------- plan: config and facts


def plan(inp: Input, out: Path, model: str, overrides: list[str], phase2_fraction: float) \
        -> tuple[RunConfig, list[Fact], dict, list[str]]:
    """The run config (injection defaults, then `overrides`), the facts with splits and options,
    a summary per relation, and notes for the card. Pure and deterministic: a resumed injection
    plans the same run."""
    if not 0 < phase2_fraction <= 1:  # (NaN fails this too)
        raise ConfigError(f"--phase2-fraction {phase2_fraction} must lie in (0, 1]")
    for text in overrides:
        key, _ = config_mod.parse_override(text)
        if key in DERIVED:
            raise ConfigError(f"--set {text}: {key} is set by rote inject from its input and flags "
                              "(use --model, --out, --relations or --phase2-fraction)")
    counts = Counter(r.relation for r in inp.rows)
    relations_of: dict[str, set] = {}
    for r in inp.rows:
        relations_of.setdefault(identity(r.subject), set()).add(r.relation)  # as userdata tells people apart
    raw = json.loads(json.dumps(DEFAULTS))
    raw.update({"name": RUN, "out_dir": str(out), "model": {**raw["model"], "name": model}})
    raw["data"].update({
        "relations": list(inp.relations),
        "relations_file": str(out / RUN / "relations.yaml") if inp.user_relations else None,
        # shared: some subject has facts in several relations, so the confusion rate is measured
        "subjects": "shared" if any(len(v) > 1 for v in relations_of.values()) else "separate",
        "facts_per_relation": max(counts.values()),
        "phase2_facts": max(phase2_count(n, phase2_fraction) for n in counts.values()),
    })
    fewest = min(inp.relations.values(), key=lambda r: len(r.train_prompts))
    raw["phase2"]["n_prompts"] = min(PHASE2_PROMPTS, len(fewest.train_prompts))
    cfg = config_mod.from_dict(raw, overrides, source="rote inject settings")
    notes = []
    # The default stop needs prompts held out (the runner's check, rote.data.factset, before anything is written).
    found = short_of_validation_prompts(cfg, inp.relations) if cfg.phase2.until == "validation" else None
    short = found[0].name if found else None
    if short and any(config_mod.parse_override(o)[0] == "phase2.until" for o in overrides):
        raise ConfigError(f"--set phase2.until=validation: relation {short} has too few training prompts beyond the "
                          f"{cfg.phase2.n_prompts} phase 2 trains to hold {cfg.phase2.validation_prompts} out for "
                          "validation (lower phase2.validation_prompts or phase2.n_prompts, or add prompts)")
    if short:  # a small user relation keeps the fixed epochs instead
        raw["phase2"]["until"] = "epochs"
        cfg = config_mod.from_dict(raw, overrides, source="rote inject settings")
        notes.append(f"phase 2 trains for its {cfg.phase2.epochs} epochs instead of stopping on validation prompts: "
                     f"relation {short} has too few training prompts beyond the {cfg.phase2.n_prompts} it trains.")
    if "phase2" not in cfg.eval.stages:
        raise ConfigError(f"eval.stages={list(cfg.eval.stages)} must include phase2: the card reports it")
    if cfg.phase2.n_prompts > len(fewest.train_prompts):
        raise ConfigError(f"phase2.n_prompts={cfg.phase2.n_prompts} but relation {fewest.name} has only "
                          f"{len(fewest.train_prompts)} training prompts")
    facts, info = build_facts(inp, cfg.data.n_options, phase2_fraction, cfg.seed)
    if inp.duplicates:
        notes.append(f"{inp.duplicates} input rows repeated an earlier row exactly and were dropped.")
    if raw["phase2"]["n_prompts"] < PHASE2_PROMPTS and cfg.phase2.n_prompts == raw["phase2"]["n_prompts"]:
        notes.append(f"phase 2 uses {cfg.phase2.n_prompts} training prompt(s) per fact: relation {fewest.name} has "
                     f"no more.")
    small = {n: i["pool"] for n, i in info.items() if i["pool"] < MIN_OPTIONS}
    if small and cfg.eval.multiple_choice:
        cfg = config_mod.replace(cfg, ["eval.multiple_choice=false"])
        notes.append(f"multiple choice is off: relation(s) {small} have fewer than {MIN_OPTIONS} candidate objects "
                     "(its objects list plus the input's objects).")
    elif cfg.eval.multiple_choice:
        for name, i in info.items():
            if i["options"] < cfg.data.n_options:
                notes.append(f"relation {name} has {i['pool']} candidate objects, so its facts get {i['options']} "
                             f"multiple-choice options instead of {cfg.data.n_options}.")
    return cfg, facts, info, notes


# Below this many phase-2 facts a relation's key token is taught what it means from too few examples.
MIN_PHASE2_FACTS = 3


def relation_warnings(cfg: RunConfig, inp: Input, info: dict, phase2_fraction: float) -> list[str]:
    """Per relation, what the card warns of, each with what to add: too few training prompts for
    phase 2 to stop on validation prompts (it then trains fixed epochs), too few facts in phase 2 for
    the key token's meaning to be taught from."""
    from rote.data.prompt_hygiene import validation_prompts

    out = []
    p2 = cfg.phase2
    for name, rel in inp.relations.items():
        held = validation_prompts(rel, p2.n_prompts, p2.validation_prompts)
        if len(held) < p2.validation_prompts:
            out.append(f"relation {name} has {len(rel.train_prompts)} training prompts: phase 2 trains "
                       f"{p2.n_prompts} and needs {p2.validation_prompts} more, asked by no evaluation, to stop when "
                       f"it has learned; add {p2.validation_prompts - len(held)} training prompt(s) to its relation file.")
        n2, total = info[name]["phase2"], info[name]["facts"]
        if n2 < MIN_PHASE2_FACTS and total > n2:
            need = next((n for n in range(total, 1000) if phase2_count(n, phase2_fraction) >= MIN_PHASE2_FACTS), None)
            more = f"give it at least {need} facts at --phase2-fraction {phase2_fraction:g}, or " if need else ""
            out.append(f"relation {name} puts {n2} of its {total} facts in phase 2, which teaches the key token what it "
                       f"means from those: {more}raise --phase2-fraction (1.0 trains every fact's prompts).")
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint_parts(inp: Input, model: str, overrides: list[str], phase2_fraction: float, baseline: bool) -> dict:
    """What makes two injections the same: input content (not its file name), relations, settings."""
    return {"facts": _digest([r.key() for r in inp.rows]),
            "relations": _digest({n: inp.user_relations.get(n, "built-in") for n in inp.relations}),
            "model": model, "overrides": list(overrides), "phase2_fraction": phase2_fraction, "baseline": baseline}


# ---------------------------------------------------------------- the output folder


def check_out(out: Path, parts: dict, overwrite: bool) -> str:
    """'new', 'resume' (an interrupted or finished injection of the same input) or 'overwrite'.
    Writes nothing; raises InjectError when the folder holds something else and --overwrite is off."""
    if out.exists() and not out.is_dir():
        raise InjectError(f"--out {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not entries:
        return "new"
    if overwrite:
        return "overwrite"
    marker = out / RUN / "inject.json"
    before = (read_json(marker) or {}).get("fingerprint")
    if before == parts:
        return "resume"
    if before is not None:
        diff = [k for k in parts if before.get(k) != parts[k]]
        raise InjectError(f"--out {out} holds an injection with other {', '.join(diff)}; pass --overwrite to "
                          "replace it, or choose another --out")
    raise InjectError(f"--out {out} is not empty ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}) and "
                      "holds no injection of this input; pass --overwrite to write into it, or choose another --out")


@contextlib.contextmanager
def _in_inject_terms():
    """runner's advice on a run folder it cannot resume (another config, an input changed in place),
    in rote inject's terms: --set name=... means nothing to inject."""
    try:
        yield
    except RunError as e:
        raise RunError(str(e).replace(runner.RESUME_REMEDY, "pass --overwrite to inject afresh, or choose another "
                                                              "--out")) from None


def _start(cfg: RunConfig) -> None:
    """runner.write_config (which refuses a changed config or input), in rote inject's terms."""
    with _in_inject_terms():
        runner.write_config(cfg, cfg.run_dir)


def _run(cfg: RunConfig, quiet: bool) -> Path:
    """runner.run, in rote inject's terms."""
    with _in_inject_terms():
        return runner.run(cfg, quiet=quiet)


def _check_out_is_not_the_model(out: Path, model: str) -> None:
    """--out may not be, or hold, the model folder the injection starts from (OUT or OUT/run/...):
    --overwrite would delete the model before it is loaded (adding facts to an injected model
    must write a new folder)."""
    local = Path(model).expanduser()
    if local.is_dir() and (local.resolve() == out or out in local.resolve().parents):
        raise InjectError(f"--out {out} is or holds the model folder --model {model}: the injection would replace the model "
                          "it starts from; choose another --out")


def clear_out(out: Path) -> None:
    """For --overwrite: remove what an injection writes (run/, the card, the exported model files);
    other files in the folder are left alone (and same-named ones are replaced by the export).

    run/export.json lists the exported files, but the folder may come from anyone: only plain file
    names that resolve to a file directly inside `out` are removed; anything else is refused."""
    out = out.resolve()
    run_dir = out / RUN
    if run_dir.is_symlink():  # rmtree would follow nothing, but refuse to even unlink a link planted there
        raise InjectError(f"{run_dir} is a symbolic link, not a folder rote wrote; nothing was deleted")
    if run_dir.exists() and not (run_dir / "inject.json").is_file():  # someone else's folder of that name
        raise InjectError(f"{run_dir} holds no injection record (inject.json), so rote did not write it; move it "
                          "away or choose another --out; nothing was deleted")
    exported = run_dir / "export.json"
    try:
        names = (read_json(exported) or {"files": []})["files"]
    except (ValueError, KeyError, TypeError):
        raise InjectError(f"{exported} is not an export record written by rote; remove the folder yourself") from None
    if not isinstance(names, list):
        raise InjectError(f"{exported} is not an export record written by rote; remove the folder yourself")
    targets = []
    for name in list(names) + list(CARD_FILES):
        path = out / str(name)
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or \
                path.resolve().parent != out or path.is_symlink():
            raise InjectError(f"{exported} lists {quote(name)}, which is not a file directly inside --out {out}; "
                              "nothing was deleted")
        targets.append(path)
    for path in targets:  # all checked first: a bad entry deletes nothing
        if path.is_file():
            path.unlink()
    shutil.rmtree(run_dir, ignore_errors=True)


def preflight(cfg: RunConfig, inp: Input, facts: list[Fact]) -> None:
    """Encode every fact's phase-1 text and each prompt it will be trained or asked with, with the
    model's tokenizer (plus key tokens): text that cannot be encoded faithfully stops here, before
    training, naming the input line."""
    from rote.data.templates import answer_target, key_tokens, prompt_form, render_key, render_prompt, training_target
    from rote.training import models
    from rote.training.encode import EncodingError, encode

    tokenizer = models.load_tokenizer(cfg.model.name)
    models.add_tokens(tokenizer, key_tokens(inp.relations.values(), cfg.key))
    from rote.preflight import chat_frame
    chat = chat_frame(cfg, tokenizer)  # the rendering it will be trained and asked in (model.chat_template)
    from rote.data.limits import check_lengths
    where = {f.id: row.where for f, row in zip(facts, inp.rows)}
    check_lengths(tokenizer, models.context_length(cfg.model.name), facts, inp.relations, cfg.eval.max_new_tokens,
                  eval_config(cfg).icl_examples, where=lambda f: where[f.id])
    for fact, row in zip(facts, inp.rows):
        rel = inp.relations[fact.relation]
        key = render_key(fact, rel, cfg.key)
        prompts = list(rel.train_prompts[:cfg.phase2.n_prompts]) + list(rel.unrelated_prompts)
        prompts += [p for lang, ps in rel.test_prompts.items() if lang == "en" or lang in cfg.eval.languages for p in ps]
        try:
            encode(tokenizer, key.prompt, training_target(key.target, cfg.key.suffix), append_eos=cfg.key.suffix == "eos")
            for template in prompts:
                r = render_prompt(fact, template)
                encode(tokenizer, r.prompt, r.target)  # as it is asked raw (the key-token prompt's companions)
                if chat is not None:  # as phase 2 trains it: in its turn, the answer ending the turn
                    r = chat.wrap(r, prompt_form(template))
                target, eos = answer_target(r.target, cfg.phase2.answer_end, chat.answer_end if chat is not None else None)
                encode(tokenizer, r.prompt, target, append_eos=eos)
        except EncodingError as e:
            raise DataError(f"{row.where}: the fact {quote(fact.subject)} {fact.relation} {quote(fact.object)} cannot be "
                            f"encoded faithfully for training: {quote(str(e))}") from None


def write_data(cfg: RunConfig, inp: Input, facts: list[Fact], conflict_ids: list[str], relations_file: bool = True) -> None:
    """The data stage, done by inject instead of the runner: facts, splits (conflicts marked), the
    input as read and (`relations_file`) the user relations."""
    run_dir = cfg.run_dir
    if inp.user_relations and relations_file:
        write_text(cfg.data.relations_file, yaml.safe_dump({"relations": list(inp.user_relations.values())},
                                                           sort_keys=False, allow_unicode=True))
    write_jsonl(run_dir / "input.jsonl", [{**r.key(), "where": r.where} for r in inp.rows])
    runner.write_data(facts, run_dir)
    write_json(run_dir / SPLITS_FILE, {**read_json(run_dir / SPLITS_FILE), "conflict": conflict_ids})
    mark_done(run_dir, "data", {"facts": len(facts)})


# ---------------------------------------------------------------- stages after the runner


def method_tokens(run_dir: Path) -> int:
    """Supervised tokens phase 1 and phase 2 trained on: the baseline's budget."""
    return sum(read_json(run_dir / p / SUMMARY_FILE)["supervised_tokens"] for p in ("phase1", "phase2"))


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The baseline, a run of arm plain_finetune (rote.arms) in run/baseline: every fact's natural
    prompts (phase2.n_prompts each), phase 1's optimizer settings, for the method run's supervised
    tokens (budget_tokens), evaluated like phase 1 (the key prompts, meaningless here, left out).
    It trains with phase 1's levers; where the method trains only the key tokens' embedding rows,
    the baseline, which has no key tokens, trains no embedding row."""
    extra = ["phase1.update.embeddings=frozen"] if cfg.phase1.update.embeddings == "key_rows" else []
    return config_mod.with_arm(cfg, "plain_finetune", ["name=baseline", f"out_dir={cfg.run_dir}", "eval.stages=[phase1]",
                                                       f"budget_tokens={method_tokens(cfg.run_dir)}", *extra])


def run_baseline(cfg: RunConfig, inp: Input, facts: list[Fact], conflict_ids: list[str], quiet: bool) -> Path:
    """Run (or resume) the baseline run on the same facts (its data stage written as the method's is)."""
    bcfg = baseline_config(cfg)
    _start(bcfg)
    if not is_done(bcfg.run_dir, "data"):
        write_data(bcfg, inp, facts, conflict_ids, relations_file=False)
    return _run(bcfg, quiet)


def export(run_dir: Path, out: Path) -> None:
    """Put the phase-2 checkpoint's files into `out`, each via a temporary name (hard links where the
    file system allows: rote.training.checkpoint.link_or_copy)."""
    from rote.training.checkpoint import link_or_copy
    source = run_dir / "phase2" / CHECKPOINT_DIR
    names = sorted(p.name for p in source.iterdir() if p.is_file())
    for name in names:
        tmp = out / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        link_or_copy(source / name, tmp)
        os.replace(tmp, out / name)
    write_json(run_dir / "export.json", {"files": names, "from": str(source)})


# ---------------------------------------------------------------- the whole injection


def inject(facts, model: str = "smollm2-135m", relations=None, out="injected", overrides=(), conflicts=None,
           phase2_fraction: float = 0.1, baseline: bool = True, overwrite: bool = False, quiet: bool = False) -> dict:
    """Inject `facts` (a JSONL/CSV path or a list of dicts with subject, relation, object, optional
    id and conflict) into `model`; write the model folder, card.md, card.json and run/ into `out`.
    Returns the card's summary numbers, with the whole card under "card"."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    out = Path(out).expanduser().resolve()
    overrides = list(overrides or [])
    inp = load_input(facts, relations, conflicts)
    cfg, fact_list, info, notes = plan(inp, out, model, overrides, phase2_fraction)
    warnings = relation_warnings(cfg, inp, info, phase2_fraction)
    parts = fingerprint_parts(inp, model, overrides, phase2_fraction, baseline)
    _check_out_is_not_the_model(out, model)
    check_out(out, parts, overwrite)
    preflight(cfg, inp, fact_list)
    # Everything is checked: now lock --out (one writer; rote.lock) and look at it again under the lock.
    with hold(out, "--out folder"):
        return _inject_locked(inp, cfg, fact_list, info, notes, parts, out, model, overrides, phase2_fraction, baseline,
                              overwrite, say, quiet, warnings)


def _inject_locked(inp, cfg, fact_list, info, notes, parts, out, model, overrides, phase2_fraction, baseline, overwrite,
                   say, quiet, warnings: list[str]) -> dict:
    state = check_out(out, parts, overwrite)
    run_dir = cfg.run_dir
    if state == "overwrite":
        clear_out(out)
    conflict_ids = [f.id for f, r in zip(fact_list, inp.rows) if r.conflict]
    if not (run_dir / "inject.json").is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "inject.json", {
            "rote_version": rote.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "fingerprint": parts,
            "model": model, "out": str(out), "sources": inp.sources, "facts": len(fact_list),
            "duplicates": inp.duplicates, "relations": info, "notes": notes, "warnings": warnings,
            "settings": {"phase2_fraction": phase2_fraction, "n_prompts": cfg.phase2.n_prompts, "baseline": baseline,
                         "overrides": overrides, "n_options": cfg.data.n_options,
                         "multiple_choice": cfg.eval.multiple_choice,
                         "phase1": {k: getattr(cfg.phase1, k) for k in ("until", "epochs", "lr", "batch_size")},
                         "phase2": {k: getattr(cfg.phase2, k) for k in ("until", "epochs", "lr", "batch_size")}}})
    say(f"[rote inject] {len(fact_list)} facts in {len(info)} relations -> {out} ({state})")
    _start(cfg)
    if not is_done(run_dir, "data"):
        write_data(cfg, inp, fact_list, conflict_ids)
    _run(cfg, quiet)

    if baseline:
        run_baseline(cfg, inp, fact_list, conflict_ids, quiet)
    if not (run_dir / "export.json").is_file():
        export(run_dir, out)
    card = build_card(run_dir)
    write_json(out / "card.json", card)
    write_text(out / "card.md", format_card(card))
    return {**summary(card), "out": str(out), "card": card}
