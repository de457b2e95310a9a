"""A study's plan: every cell x seed as a run config, the phase-1 runs cells share, the dry run's counts. Pure.

`expand` turns a Study (rote.study.spec) into runs; `describe` is what `rote study --dry-run` prints:
the cells, the runs, the phase-1 trainings after reuse, and rough counts of optimizer steps and
queries (rote.evaluation.queries builds the very queries the runs will ask, on the fact set each
config plans: rote.data.factset).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from rote import config as config_mod
from rote.arms import ARMS, eval_config
from rote.config import Phase2Config, RunConfig
from rote.data.factset import check_relations, plan_facts, relations_of
from rote.data.relation_files import resolve_relations
from rote.errors import ConfigError
from rote.evaluation.queries import build_queries
from rote.names import asks_facts, planned_stages
from rote.study.spec import Cell, Study, StudyError, override_keys


@dataclass
class Run:
    cell: Cell
    seed: int
    cfg: RunConfig
    phase1: str | None  # name of the shared phase-1 run; None when the cell trains its own (or brings a checkpoint)
    dropped: tuple[str, ...] = ()  # keys of the base config and `set` that the cell's arm does not read


@dataclass
class Plan:
    study: Study
    dir: Path  # <out>/<study>
    runs: list[Run]
    phase1: dict  # name -> RunConfig of the shared phase-1 runs

    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"



# ---------------------------------------------------------------- cells x seeds -> runs


# Phase-1 settings added after studies were first run, at defaults that train as before: left out of
# phase1_key at those defaults, so a study planned before they existed keeps its phase-1 run names.
_ADDED = {"speed": config_mod.to_dict(config_mod.SpeedConfig())}
_ADDED_UPDATE = {"key_rows_gradient": "masked"}


def _without_added_defaults(phase1: dict) -> dict:
    out = {k: v for k, v in phase1.items() if not (k in _ADDED and v == _ADDED[k])}
    if isinstance(out.get("update"), dict):
        out["update"] = {k: v for k, v in out["update"].items() if not (k in _ADDED_UPDATE and v == _ADDED_UPDATE[k])}
    return out


def phase1_key(d: dict) -> dict:
    """What phase-1 training depends on (a resolved config dict without its seed): the phase 1 the
    arm trains (in_context memorizes as the method does), the model, the data (not k: it only splits
    the same facts), the key and the phase1 section; for mixed, also its phase-2 examples and budget."""
    arm = ARMS[d["arm"]]
    key = {k: v for k, v in d.items() if k not in ("name", "out_dir", "seed", "phase2", "eval", "arm")}
    if isinstance(key.get("phase1"), dict):
        key["phase1"] = _without_added_defaults(key["phase1"])
    key["arm"] = arm.shares_phase1_with
    if arm.phase1 == "mixed":  # it trains the k facts' natural prompts in phase 1: they are part of it
        key["phase2"] = {k: v for k, v in d["phase2"].items() if k != "checkpoint"}
        key["k"] = d["data"]["phase2_facts"]
    elif _asks_contrast(d):  # phase 1's contrast questions ask about the k facts' people
        key["k"] = d["data"]["phase2_facts"]
    key["data"] = {k: v for k, v in d["data"].items() if k != "phase2_facts"}
    return key


def _asks_contrast(d: dict) -> bool:
    return bool(((d.get("phase1") or {}).get("preserve") or {}).get("contrast"))


def _phase1_run(members: list[tuple[dict, RunConfig]], name: str, where: str) -> RunConfig:
    """The shared phase-1 run of cells that agree on phase1_key: their phase 1 and the evaluations
    of the base model and of phase 1. Its facts are all held out (cells re-split them by their own
    k), except for mixed, which trains its cells' k facts, and with phase1.preserve.contrast, whose
    questions ask about the k facts' people; its `train` prompt set asks the most
    training prompts any of its cells trains on."""
    d, cfg = json.loads(json.dumps(members[0][0])), members[0][1]
    arm = ARMS[cfg.arm]
    d.update(name=name, arm=arm.shares_phase1_with)
    if arm.phase1 == "mixed":
        d["phase2"] = {k: v for k, v in d["phase2"].items() if k != "checkpoint"}
    else:
        if not _asks_contrast(d):  # then the split is the k its cells share (phase1_key)
            d["data"]["phase2_facts"] = 0
        d["phase2"] = config_mod.to_dict(Phase2Config()) | {"n_prompts": max(c.phase2.n_prompts for _, c in members)}
    d["eval"] = _shared_eval(members, where)
    tree, _ = config_mod.drop_unread(d, source=where)
    return config_mod.from_dict(tree, source=where)


def _asks_early(d: dict) -> list[str]:
    return [s for s in d["eval"]["stages"] if s in ("base", "phase1")]


def _effective_eval(d: dict) -> dict:
    """A cell's eval settings as the shared run must apply them: without the stages and the in-context
    demonstrations (the shared run's arm shows none), and with the relation the `repurposed` prompt
    set asks named (phase2.prompts_from when eval does not name one: the shared run trains no phase
    2 of its own). A setting a cell's arm leaves out is None."""
    ev = {k: v for k, v in d["eval"].items() if k not in ("stages", "icl_examples")}
    if "repurposed" in ev.get("prompt_sets", ()) and not ev.get("repurposed_prompts"):
        ev["repurposed_prompts"] = d["phase2"].get("prompts_from")
    return ev


def _shared_eval(members: list[tuple[dict, RunConfig]], where: str) -> dict:
    """The eval section of a shared phase-1 run: the stages base and phase 1 that any of its cells
    asks for, with the eval settings of those cells, which must agree (the run evaluates once for
    all of them; a cell that asks neither stage reads nothing of it)."""
    asking = [d for d, _ in members if _asks_early(d)]
    if not asking:
        return {**_effective_eval(members[0][0]), "stages": []}
    first = _effective_eval(asking[0])
    for d in asking[1:]:
        other = _effective_eval(d)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            raise StudyError(f"{where}: cells {asking[0]['name']} and {d['name']} share this phase-1 run but evaluate "
                             f"the base model or phase 1 with different eval settings ({', '.join('eval.' + k for k in diff)}); "
                             "the run evaluates once: give them the same settings, or leave base and phase1 out of "
                             "eval.stages for one of them")
    stages = {s for d in asking for s in _asks_early(d)}
    return {**first, "stages": [s for s in ("base", "phase1") if s in stages]}


def _check_cell(study: Study, cell: Cell, cfg: RunConfig) -> None:
    where = f"{study.path}: cell {cell.id}"
    if not 1 <= cfg.data.phase2_facts <= cfg.data.facts_per_relation:
        raise StudyError(f"{where}: data.phase2_facts={cfg.data.phase2_facts} must lie between 1 and "
                         f"data.facts_per_relation={cfg.data.facts_per_relation}")
    for m in study.metrics:
        problem = None
        if m.stage not in cfg.eval.stages:
            problem = f"reads stage {m.stage}, not in eval.stages {list(cfg.eval.stages)}"
        elif m.prompt_set not in cfg.eval.prompt_sets:
            problem = f"reads prompt set {m.prompt_set}, not in eval.prompt_sets {list(cfg.eval.prompt_sets)}"
        elif m.prompt_set == "languages" and m.language not in cfg.eval.languages:
            problem = f"reads language {m.language}, not in eval.languages {list(cfg.eval.languages)}"
        elif m.metric in ("mc", "prob") and not cfg.eval.multiple_choice:
            problem = f"reads {m.metric}, which needs eval.multiple_choice=true"
        elif m.relation != "all" and m.relation not in cfg.data.relations:
            problem = f"reads relation {m.relation}, not in data.relations {list(cfg.data.relations)}"
        if problem:
            raise StudyError(f"{where}: metrics.{m.name} {problem}")


def expand(study: Study, out: str | Path = "studies") -> Plan:
    """Every cell x seed as a validated run config, and the shared phase-1 runs."""
    study_dir = Path(out) / study.name
    runs_dir = study_dir / "runs"
    runs: list[Run] = []
    groups: dict[str, list[tuple[dict, RunConfig]]] = {}
    base = config_mod.load_tree(study.base)
    for seed in study.seeds:
        for cell in study.cells:
            where = f"{study.path}: cell {cell.id}"
            try:
                # The base config and `set` describe the method; a cell of another arm takes what its
                # arm reads of them (and says what it left: --dry-run). Its own overrides must all be read.
                tree = config_mod.apply_overrides(base, [*study.set, *study.cli_set, *cell.overrides])
                tree, dropped = config_mod.drop_unread(tree, keep=override_keys(cell.overrides), source="the cell")
                cfg = config_mod.from_dict(tree, source=str(study.base))
                check_relations(cfg)  # what would fail only later, in phase 2 (too many training prompts)
            except ConfigError as e:
                raise StudyError(f"{where}: {e}") from None
            _check_cell(study, cell, cfg)
            d = config_mod.to_dict(cfg) | {"seed": seed, "name": f"{cell.slug}-s{seed}", "out_dir": str(runs_dir)}
            p1 = None
            if ARMS[cfg.arm].shares_phase1_with and not cfg.phase2.checkpoint:
                digest = hashlib.sha1(json.dumps(phase1_key(d), sort_keys=True).encode()).hexdigest()[:8]
                p1 = f"p1-{digest}-s{seed}"
                groups.setdefault(p1, []).append((d, cfg))
                d = json.loads(json.dumps(d))
                d["phase2"]["checkpoint"] = str(runs_dir / p1 / "phase1" / "checkpoint")
                d["eval"]["stages"] = [s for s in d["eval"]["stages"] if s not in ("base", "phase1")]
            runs.append(Run(cell, seed, config_mod.from_dict(d, source=where), p1, tuple(dropped)))
    phase1 = {name: _phase1_run(members, name, f"{study.path} phase-1 run {name}") for name, members in groups.items()}
    return Plan(study, study_dir, runs, phase1)


# ---------------------------------------------------------------- dry run


_QUERIES: dict = {}


def _query_count(cfg: RunConfig, n_prompts: int) -> int:
    """How many queries one evaluation of `cfg`'s facts asks: rote.evaluation.queries.build_queries on the fact
    set the config plans (rote.data.factset), so the count is what the run will ask."""
    key = json.dumps([config_mod.to_dict(cfg.data), config_mod.to_dict(cfg.key), config_mod.to_dict(cfg.eval),
                      n_prompts, cfg.seed, cfg.phase2.prompts_from, cfg.arm], sort_keys=True)
    if key not in _QUERIES:
        relations = relations_of(cfg)
        repurposed = cfg.eval.repurposed_prompts or cfg.phase2.prompts_from
        asked = resolve_relations((repurposed,), cfg.data.relations_file)[0] if repurposed else None
        _QUERIES[key] = len(build_queries(plan_facts(cfg), relations, cfg.key, eval_config(cfg), n_prompts, asked))
    return _QUERIES[key]


def _eval_cost(cfg: RunConfig, stages: int, n_prompts: int) -> tuple[int, int]:
    """(generations, option scorings) of `stages` evaluations of `cfg`'s facts."""
    queries = _query_count(cfg, n_prompts) * stages
    return queries, queries * cfg.data.n_options if cfg.eval.multiple_choice else 0


def cost(plan: Plan) -> dict:
    """Rough counts (no times): optimizer steps of both phases, generations and option scorings."""
    out = {"phase1_steps": 0, "phase2_steps": 0, "generations": 0, "option_scorings": 0, "evaluations": 0,
           "phase1_until_memorized": False}
    for cfg in plan.phase1.values():
        facts = cfg.data.facts_per_relation * len(cfg.data.relations)
        out["phase1_steps"] += cfg.phase1.epochs * math.ceil(facts / cfg.phase1.batch_size)
        out["phase1_until_memorized"] |= cfg.phase1.until == "memorized"
        g, s = _eval_cost(cfg, len(cfg.eval.stages), cfg.phase2.n_prompts)
        out["generations"] += g
        out["option_scorings"] += s
        out["evaluations"] += len(cfg.eval.stages)
    for run in plan.runs:
        cfg, arm = run.cfg, ARMS[run.cfg.arm]
        if arm.phase2 == "natural_k":
            examples = cfg.data.phase2_facts * len(cfg.data.relations) * cfg.phase2.n_prompts
            out["phase2_steps"] += cfg.phase2.epochs * math.ceil(examples / cfg.phase2.batch_size)
        if run.phase1 is None and not cfg.phase2.checkpoint:  # a plain arm trains its own phase 1
            trained = cfg.data.facts_per_relation if arm.phase1 == "natural_all" else cfg.data.phase2_facts
            examples = trained * len(cfg.data.relations) * cfg.phase2.n_prompts
            out["phase1_steps"] += cfg.phase1.epochs * math.ceil(examples / cfg.phase1.batch_size)
        # a damage-only eval/base (base not in eval.stages) asks no facts: not counted
        stages = sum(s.startswith("eval/") and asks_facts(s, cfg.eval.stages)
                     for s in planned_stages(cfg.eval.stages, bool(cfg.phase2.checkpoint)))
        g, s = _eval_cost(cfg, stages, cfg.phase2.n_prompts)
        out["generations"] += g
        out["option_scorings"] += s
        out["evaluations"] += stages
    return out


def describe(plan: Plan) -> str:
    """What `--dry-run` prints: the cells, the runs, the phase-1 trainings after reuse, rough counts."""
    s = plan.study
    n_cells, n_seeds = len(s.cells), len(s.seeds)
    without_reuse = sum(r.phase1 is not None for r in plan.runs)
    lines = [f"study {s.name}: {s.question}".rstrip(": "),
             f"base {s.base}" + (f"; set {' '.join(s.set)}" if s.set else "") + (f"; --set {' '.join(s.cli_set)}" if s.cli_set else ""),
             f"{n_cells} cell{'s' * (n_cells != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)} "
             f"({', '.join(map(str, s.seeds))}) = {len(plan.runs)} runs",
             f"phase 1 trains {len(plan.phase1)} times ({len(plan.phase1) // n_seeds} distinct phase-1 setting"
             f"{'s' * (len(plan.phase1) // n_seeds != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)})"
             + (f", not {without_reuse}: cells that differ only after phase 1 share it" if without_reuse > len(plan.phase1)
                else ": no two cells share a phase-1 setting"),
             "", "cells:"]
    first_seed = [r for r in plan.runs if r.seed == s.seeds[0]]
    width = max(len(c.id) for c in s.cells)
    for run in first_seed:
        p1 = f"  [phase 1: {run.phase1.rsplit('-s', 1)[0]}]" if run.phase1 else \
            "  [own phase-2 checkpoint]" if run.cfg.phase2.checkpoint else "  [its own phase 1]"
        lines.append(f"  {run.cell.id:{width}s}  {' '.join(run.cell.overrides) or '(base)'}{p1}")
        if run.dropped:
            lines.append(f"  {'':{width}s}  arm {run.cfg.arm} does not read (left out): {', '.join(run.dropped)}")
    c = cost(plan)
    lines += ["", "rough cost (counts, not times):",
              f"  phase 1: {c['phase1_steps']} optimizer steps (epochs x ceil(facts / batch), summed"
              + ("; until=memorized: at most" if c["phase1_until_memorized"] else "") + ")",
              f"  phase 2: {c['phase2_steps']} optimizer steps (epochs x ceil(k x relations x prompts / batch), summed)",
              f"  evaluation: {c['evaluations']} evaluations, {c['generations']} greedy generations"
              + (f", {c['option_scorings']} option scorings (multiple choice)" if c["option_scorings"] else ""),
              f"output: {plan.dir}/"]
    return "\n".join(lines)
