"""`rote study`: one of the paper's experiments as one command: a grid of run configs x seeds,
phase 1 trained once where cells share it, a tidy summary with the spread across seeds, a report.

    rote study configs/studies/depth.yaml [--set KEY=VALUE ...] [--seeds 0,1,2] [--dry-run] [--out studies]
    rote study --list

A study file (paths relative to the file; every key is checked, an unknown one is an error):

    study: depth                    # its folder: <out>/depth/
    question: "How deep must ...?"  # shown by --list and atop the report
    base: ../demo.yaml              # the run config every cell starts from
    set: ["eval.stages=[phase1, phase2]"]   # overrides for every cell (then --set, then the cell's)
    seeds: [0, 1, 2]                # default [0, 1, 2]; --seeds replaces them
    grid:                           # axis -> value label -> overrides; cells = product of the axes
      epochs: {"3": ["phase1.epochs=3"], "6": ["phase1.epochs=6"]}
      k: {"1": ["data.phase2_facts=1"], "half": ["data.phase2_facts=15"]}
    metrics:                        # name -> one row of eval/<stage>/summary.json
      heldout_test: {stage: phase2, split: heldout, prompt_set: test, language: en, metric: prefix}
    paper: {heldout_test: {"epochs=3,k=half": 0.35}}   # optional: the paper's numbers, by cell id
    paper_note: "..."               # optional: what the paper reports without numbers
    figure: line                    # line (x = 1st axis, a line per value of the 2nd) | heatmap | bars

A cell's id is `axis=label,...` in grid order ("default" for an empty grid); its runs are
`<out>/<study>/runs/<axis-label_...>-s<seed>`.

Reuse. Phase 1 depends on the model, the data (not on k: `data.phase2_facts` only splits the
same fact set), the key, the phase1 section and the seed. Cells that agree on these share one
phase-1 run, `runs/p1-<hash>-s<seed>` (data, eval/base, phase 1, eval/phase1; its facts all
held out, its `train` prompts the most any of its cells trains on). Every cell is then a
phase-2-only run from that checkpoint (`phase2.checkpoint`), with its own split of the same
facts written before the runner starts (the runner would otherwise copy the phase-1 run's
split). Base and phase-1 metrics of a cell are re-aggregated from the phase-1 run's
predictions with the cell's split and training prompts. The runner resumes finished stages,
so an interrupted study resumes by running the same command again.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import shutil
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from rote import config as config_mod
from rote.config import ConfigError, Phase2Config, RunConfig
from rote.facts import read_facts
from rote.factset import plan_facts, relations_of
from rote.queries import build_queries
from rote.relation_files import resolve_relations
from rote.fileio import is_done, read_json, read_jsonl, write_json, write_text
from rote.metrics import METRICS, aggregate, pick
from rote.names import EVAL_STAGES, PREDICTIONS_FILE, PROMPT_FORMS, PROMPT_SETS, SPLITS, planned_stages

TOP_KEYS = ("study", "question", "base", "set", "seeds", "grid", "metrics", "paper", "paper_note", "figure")
METRIC_KEYS = ("stage", "split", "prompt_set", "language", "metric", "relation", "form")
FIGURES = ("line", "heatmap", "bars")
RESERVED_COLUMNS = ("study", "cell", "seed", "metric", "value")
DEFAULT_SEEDS = (0, 1, 2)


class StudyError(ConfigError):
    """A study file (or study option) that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Metric:
    name: str
    stage: str
    split: str
    prompt_set: str
    metric: str
    language: str = "en"
    relation: str = "all"
    form: str = "all"  # a prompt form (statement / question / qa), or all of them

    @property
    def lower_is_better(self) -> bool:
        """Unrelated prompts answered with an object, answers from the other relation, empty answers: errors."""
        return self.prompt_set == "unrelated" or self.metric in ("other_object", "empty")

    def describe(self) -> str:
        prompts = f"test prompts ({self.language})" if self.prompt_set == "languages" else \
            f"{self.prompt_set} prompts" + ("" if self.language == "en" else f" ({self.language})")
        facts = {"phase2": "phase-2 facts", "heldout": "held-out facts", "all": "all facts"}[self.split]
        rel = "" if self.relation == "all" else f", {self.relation}"
        form = "" if self.form == "all" else f", {self.form} form only"
        return f"after {self.stage}: {facts}, {prompts}{rel}{form}, {self.metric}"


@dataclass(frozen=True)
class Cell:
    id: str  # "epochs=3,k=half": the paper's keys and the report's rows
    slug: str  # "epochs-3_k-half": file-system safe, the runs' names
    labels: dict  # axis -> value label
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    path: Path
    base: Path
    set: tuple[str, ...]
    cli_set: tuple[str, ...]
    seeds: tuple[int, ...]
    axes: dict  # axis -> tuple of value labels, in file order
    cells: tuple[Cell, ...]
    metrics: tuple[Metric, ...]
    paper: dict  # metric -> {cell id: number}
    paper_note: str
    figure: str


@dataclass
class Run:
    cell: Cell
    seed: int
    cfg: RunConfig
    phase1: str | None  # name of the shared phase-1 run; None when the cell brings its own checkpoint


@dataclass
class Plan:
    study: Study
    dir: Path  # <out>/<study>
    runs: list[Run]
    phase1: dict  # name -> RunConfig of the shared phase-1 runs

    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"


# ---------------------------------------------------------------- reading a study file


def _fail(path, key: str, message: str):
    raise StudyError(f"{path}: {key}: {message}")


def _overrides(value, path, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(path, key, f"expected a list of 'section.key=value' overrides, got {value!r}")
    for text in value:
        try:
            config_mod.parse_override(text)
        except ConfigError as e:
            _fail(path, key, str(e))
    return tuple(value)


def _metric(name: str, spec, path) -> Metric:
    where = f"metrics.{name}"
    if not isinstance(spec, dict):
        _fail(path, where, f"expected a mapping with keys {list(METRIC_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(METRIC_KEYS))
    if unknown:
        _fail(path, f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(METRIC_KEYS)})")
    for key in ("stage", "split", "prompt_set", "metric"):
        if key not in spec:
            _fail(path, where, f"missing '{key}'")
    for key, allowed in (("stage", EVAL_STAGES), ("split", SPLITS + ("all",)), ("prompt_set", PROMPT_SETS),
                         ("metric", METRICS)):
        if spec[key] not in allowed:
            _fail(path, f"{where}.{key}", f"{spec[key]!r} is not one of {list(allowed)}")
    m = Metric(name, spec["stage"], spec["split"], spec["prompt_set"], spec["metric"],
               str(spec.get("language", "en")), str(spec.get("relation", "all")), str(spec.get("form", "all")))
    if m.form not in ("all",) + PROMPT_FORMS:
        _fail(path, f"{where}.form", f"{m.form!r} is not one of {['all', *PROMPT_FORMS]}")
    if (m.prompt_set == "languages") == (m.language == "en"):
        _fail(path, f"{where}.language", "English test prompts are prompt_set 'test'; the translations are "
                                         "prompt_set 'languages' with language de, es, zh or ja")
    return m


def _grid(raw, path) -> tuple[dict, tuple[Cell, ...]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(path, "grid", f"expected a mapping axis -> {{value label: [overrides]}}, got {raw!r}")
    axes: dict[str, tuple[str, ...]] = {}
    values: dict[tuple[str, str], tuple[str, ...]] = {}
    for axis, options in raw.items():
        axis = str(axis)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", axis) or axis in RESERVED_COLUMNS:
            _fail(path, f"grid.{axis}", f"an axis name must be an identifier other than {list(RESERVED_COLUMNS)}")
        if not isinstance(options, dict) or not options:
            _fail(path, f"grid.{axis}", f"expected a mapping value label -> [overrides], got {options!r}")
        labels = []
        for label, overrides in options.items():
            label = str(label)
            if not label or any(c in label for c in ",=") or label != label.strip():
                _fail(path, f"grid.{axis}.{label}", "a value label must be non-empty, without ',' '=' or outer spaces")
            values[axis, label] = _overrides(overrides, path, f"grid.{axis}.{label}")
            labels.append(label)
        axes[axis] = tuple(labels)
    cells = []
    for combo in itertools.product(*axes.values()):
        labels = dict(zip(axes, combo))
        cid = ",".join(f"{a}={v}" for a, v in labels.items()) or "default"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(f"{a}-{v}" for a, v in labels.items()) or "default")
        cells.append(Cell(cid, slug, labels, tuple(o for a, v in labels.items() for o in values[a, v])))
    slugs = [c.slug for c in cells]
    if len(set(slugs)) != len(slugs):
        dup = next(s for s in slugs if slugs.count(s) > 1)
        _fail(path, "grid", f"two cells would share the run name {dup!r}; rename their value labels")
    return axes, tuple(cells)


def _keys(overrides) -> set[str]:
    return {config_mod.parse_override(o)[0] for o in overrides}


def _clash(a: set[str], b: set[str]) -> str | None:
    for x in sorted(a):
        for y in b:
            if x == y or x.startswith(y + ".") or y.startswith(x + "."):
                return x
    return None


def load_study(path: str | Path, seeds: list[int] | None = None, overrides: list[str] = ()) -> Study:
    """Read and check a study file. `seeds` and `overrides` (`--seeds`, `--set`) come from the command line."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        _fail(path, unknown[0], f"unknown key (known: {', '.join(TOP_KEYS)})")
    for key in ("study", "base", "metrics"):
        if key not in raw:
            _fail(path, key, "missing")
    name = str(raw["study"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        _fail(path, "study", f"{name!r} must be a plain name (letters, digits, . _ -): it names the folder")
    base = Path(os.path.normpath(path.parent / str(raw["base"])))
    if not base.is_file():
        _fail(path, "base", f"run config not found: {base}")
    study_set = _overrides(raw.get("set", []), path, "set")
    cli_set = _overrides(list(overrides), "--set", "--set")
    seeds = tuple(seeds) if seeds is not None else raw.get("seeds", DEFAULT_SEEDS)
    if not isinstance(seeds, (list, tuple)) or not seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        _fail(path, "seeds", f"expected a non-empty list of distinct integers, got {seeds!r}")
    axes, cells = _grid(raw.get("grid"), path)
    for label, given in (("set", study_set), ("--set", cli_set), *((f"grid cell {c.id}", c.overrides) for c in cells)):
        taken = _keys(given) & {"name", "seed", "out_dir"}
        if taken:
            _fail(path, label, f"'{sorted(taken)[0]}' is set by the study for each run (use seeds: / --seeds and --out)")
    # A cell's overrides come last, so a key that every cell sets cannot be changed by `set` or
    # --set: say so rather than ignore it. (A key only some cells set is fine: the others take it.)
    every_cell = set.intersection(*[_keys(c.overrides) for c in cells]) if cells else set()
    for label, given in (("set", study_set), ("--set", cli_set)):
        clash = _clash(_keys(given), every_cell)
        if clash:
            _fail(path, label, f"'{clash}' is set by every cell of the grid, so this would change nothing; "
                               "edit the grid's values instead")
    if not isinstance(raw["metrics"], dict) or not raw["metrics"]:
        _fail(path, "metrics", "expected a non-empty mapping name -> {stage, split, prompt_set, language, metric}")
    metrics = tuple(_metric(str(n), spec, path) for n, spec in raw["metrics"].items())
    paper = raw.get("paper") or {}
    if not isinstance(paper, dict):
        _fail(path, "paper", f"expected a mapping metric -> {{cell id: number}}, got {paper!r}")
    ids = [c.id for c in cells]
    for metric, numbers in paper.items():
        if metric not in raw["metrics"]:
            _fail(path, f"paper.{metric}", f"not a metric of this study (metrics: {', '.join(raw['metrics'])})")
        if not isinstance(numbers, dict):
            _fail(path, f"paper.{metric}", f"expected a mapping cell id -> number, got {numbers!r}")
        for cid, number in numbers.items():
            if cid not in ids:
                _fail(path, f"paper.{metric}.{cid}", f"no such cell (cells: {', '.join(ids)})")
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                _fail(path, f"paper.{metric}.{cid}", f"expected a number, got {number!r}")
    figure = raw.get("figure", "bars")
    if figure not in FIGURES:
        _fail(path, "figure", f"{figure!r} is not one of {list(FIGURES)}")
    if figure == "heatmap" and len(axes) != 2:
        _fail(path, "figure", f"a heatmap needs exactly 2 grid axes, the grid has {len(axes)}")
    if figure == "line" and len(axes) not in (1, 2):
        _fail(path, "figure", f"a line figure needs 1 or 2 grid axes, the grid has {len(axes)}")
    return Study(name, str(raw.get("question", "")), path, base, study_set, cli_set, tuple(seeds), axes, cells, metrics,
                 {m: dict(v) for m, v in paper.items()}, str(raw.get("paper_note", "")), figure)


def list_studies(folder: str | Path) -> list[tuple[str, str, Path]]:
    """(name, question, path) of every study file in `folder`; a broken file shows its error as the question."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(raw, dict):
                raw = {"question": "(not a study: no mapping at the top level)"}
            out.append((str(raw.get("study", path.stem)), str(raw.get("question", "")), path))
        except yaml.YAMLError as e:
            out.append((path.stem, f"(not readable: {str(e).splitlines()[0]})", path))
    return out


# ---------------------------------------------------------------- cells x seeds -> runs


def phase1_key(d: dict) -> dict:
    """What phase-1 training depends on (a resolved config dict without its seed)."""
    key = {k: v for k, v in d.items() if k not in ("name", "out_dir", "seed", "phase2", "eval")}
    if d["phase1"]["mixed"]:  # mixed training trains phase 2's examples in phase 1: they are part of it
        key["phase2_examples"] = {"k": d["data"]["phase2_facts"], "n_prompts": d["phase2"]["n_prompts"],
                                  "loss_mask": d["phase2"]["loss_mask"]}
    key["data"] = {k: v for k, v in d["data"].items() if k != "phase2_facts"}
    return key


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
    for seed in study.seeds:
        for cell in study.cells:
            try:
                cfg = config_mod.load(study.base, [*study.set, *study.cli_set, *cell.overrides])
            except ConfigError as e:
                raise StudyError(f"{study.path}: cell {cell.id}: {e}") from None
            _check_cell(study, cell, cfg)
            d = config_mod.to_dict(cfg) | {"seed": seed, "name": f"{cell.slug}-s{seed}", "out_dir": str(runs_dir)}
            p1 = None
            if not d["phase2"]["checkpoint"]:
                digest = hashlib.sha1(json.dumps(phase1_key(d), sort_keys=True).encode()).hexdigest()[:8]
                p1 = f"p1-{digest}-s{seed}"
                groups.setdefault(p1, []).append((d, cfg))
                d = json.loads(json.dumps(d))
                d["phase2"]["checkpoint"] = str(runs_dir / p1 / "phase1" / "checkpoint")
                d["eval"]["stages"] = [s for s in d["eval"]["stages"] if s not in ("base", "phase1")]
            runs.append(Run(cell, seed, config_mod.from_dict(d, source=f"{study.path} cell {cell.id}"), p1))
    phase1 = {}
    for name, members in groups.items():
        d = json.loads(json.dumps(members[0][0]))
        d["name"] = name
        mixed = members[0][1].phase1.mixed
        if not mixed:  # the phase-1 run has no phase 2: all facts held out, cells re-split them
            d["data"]["phase2_facts"] = 0
        d["phase2"] = config_mod.to_dict(Phase2Config()) | {"n_prompts": max(c.phase2.n_prompts for _, c in members)}
        if mixed:  # the natural-prompt examples it mixes in are the cells' (the same for all: see phase1_key)
            d["phase2"]["loss_mask"] = members[0][1].phase2.loss_mask
        d["eval"]["stages"] = [s for s in d["eval"]["stages"] if s in ("base", "phase1")]
        phase1[name] = config_mod.from_dict(d, source=f"{study.path} phase-1 run {name}")
    return Plan(study, study_dir, runs, phase1)


# ---------------------------------------------------------------- dry run


_QUERIES: dict = {}


def _query_count(cfg: RunConfig, n_prompts: int) -> int:
    """How many queries one evaluation of `cfg`'s facts asks: rote.queries.build_queries on the fact
    set the config plans (rote.factset), so the count is what the run will ask."""
    key = json.dumps([config_mod.to_dict(cfg.data), config_mod.to_dict(cfg.key), config_mod.to_dict(cfg.eval),
                      n_prompts, cfg.seed, cfg.phase2.prompts_from], sort_keys=True)
    if key not in _QUERIES:
        relations = relations_of(cfg)
        repurposed = cfg.eval.repurposed_prompts or cfg.phase2.prompts_from
        asked = resolve_relations((repurposed,), cfg.data.relations_file)[0] if repurposed else None
        _QUERIES[key] = len(build_queries(plan_facts(cfg), relations, cfg.key, cfg.eval, n_prompts, asked))
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
        cfg = run.cfg
        for rel in relations_of(cfg).values():
            if cfg.phase2.n_prompts > len(rel.train_prompts):
                raise StudyError(f"cell {run.cell.id}: phase2.n_prompts={cfg.phase2.n_prompts} but relation {rel.name} "
                                 f"has {len(rel.train_prompts)} training prompts")
        trained = cfg.data.facts_per_relation if cfg.phase2.facts == "all" else cfg.data.phase2_facts
        examples = trained * len(cfg.data.relations) * cfg.phase2.n_prompts
        out["phase2_steps"] += cfg.phase2.epochs * math.ceil(examples / cfg.phase2.batch_size)
        stages = sum(s.startswith("eval/") for s in planned_stages(cfg.eval.stages, bool(cfg.phase2.checkpoint)))
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
        p1 = f"  [phase 1: {run.phase1.rsplit('-s', 1)[0]}]" if run.phase1 else "  [own phase-2 checkpoint]"
        lines.append(f"  {run.cell.id:{width}s}  {' '.join(run.cell.overrides) or '(base)'}{p1}")
    c = cost(plan)
    lines += ["", "rough cost (counts, not times):",
              f"  phase 1: {c['phase1_steps']} optimizer steps (epochs x ceil(facts / batch), summed"
              + ("; until=memorized: at most" if c["phase1_until_memorized"] else "") + ")",
              f"  phase 2: {c['phase2_steps']} optimizer steps (epochs x ceil(k x relations x prompts / batch), summed)",
              f"  evaluation: {c['evaluations']} evaluations, {c['generations']} greedy generations"
              + (f", {c['option_scorings']} option scorings (multiple choice)" if c["option_scorings"] else ""),
              f"output: {plan.dir}/"]
    return "\n".join(lines)


# ---------------------------------------------------------------- running


def execute(plan: Plan, quiet: bool = False, keep_checkpoints: bool = False) -> None:
    """Run (or resume) every shared phase-1 run and every cell x seed. A finished cell's phase-2
    checkpoint is deleted unless `keep_checkpoints` (its predictions are what the study reads;
    at 135M parameters each checkpoint is 540 MB)."""
    from rote import runner
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    total = len(plan.runs) + len(plan.phase1)
    done_p1: set[str] = set()
    step = 0
    for run in plan.runs:
        if run.phase1 and run.phase1 not in done_p1:
            step += 1
            started = time.perf_counter()
            runner.run(plan.phase1[run.phase1], stop_after="eval/phase1", quiet=True)
            done_p1.add(run.phase1)
            say(f"[study {plan.study.name}] {step}/{total} {run.phase1} (phase 1, seed {run.seed}): "
                f"{time.perf_counter() - started:.0f} s")
        step += 1
        started = time.perf_counter()
        # A cell that shares a phase 1 starts from its checkpoint; the runner copies that run's
        # facts and splits them by the cell's own k.
        runner.run(run.cfg, quiet=True)
        if not keep_checkpoints:
            shutil.rmtree(run.cfg.run_dir / "phase2" / "checkpoint", ignore_errors=True)
        say(f"[study {plan.study.name}] {step}/{total} {run.cell.id} seed {run.seed}: {time.perf_counter() - started:.0f} s")


# ---------------------------------------------------------------- collecting numbers


def _stage_rows(plan: Plan, run: Run, stage: str, cache: dict) -> list[dict] | None:
    """Summary rows of `stage` for this cell x seed, or None while they do not exist."""
    run_dir = run.cfg.run_dir
    if stage == "phase2" or run.phase1 is None:
        summary = read_json(run_dir / "eval" / stage / "summary.json") if is_done(run_dir, f"eval/{stage}") else None
        return summary["rows"] if summary else None
    p1_dir = plan.runs_dir / run.phase1
    if not is_done(p1_dir, f"eval/{stage}") or not (run_dir / "facts.jsonl").is_file():
        return None
    key = (run.phase1, stage, run.cfg.data.phase2_facts, run.cfg.phase2.n_prompts)
    if key not in cache:
        if (run.phase1, stage) not in cache:
            cache[run.phase1, stage] = read_jsonl(p1_dir / "eval" / stage / PREDICTIONS_FILE)
        split = {f.id: f.split for f in read_facts(run_dir / "facts.jsonl")}
        n_prompts = run.cfg.phase2.n_prompts  # the `train` set: the prompts this cell's phase 2 trains on
        records = [r | {"split": split[r["fact_id"]]} for r in cache[run.phase1, stage]
                   if r["prompt_set"] != "train" or r["prompt_index"] < n_prompts]
        cache[key] = aggregate(records)
    return cache[key]


def collect(plan: Plan) -> list[dict]:
    """One row per cell x seed x metric: {cell, seed, labels, metric, value (None while missing)}."""
    cache: dict = {}
    rows = []
    for run in plan.runs:
        for m in plan.study.metrics:
            stage_rows = _stage_rows(plan, run, m.stage, cache)
            found = pick(stage_rows, split=m.split, prompt_set=m.prompt_set, language=m.language,
                         relation=m.relation, form=m.form) if stage_rows else None
            rows.append({"cell": run.cell.id, "seed": run.seed, "labels": run.cell.labels, "metric": m.name,
                         "value": found.get(m.metric) if found else None})
    return rows


def training_tokens(plan: Plan, run: Run) -> dict | None:
    """Supervised tokens trained by this cell x seed: its phase 1 (shared or its own) and its phase 2."""
    p1_dir = plan.runs_dir / run.phase1 if run.phase1 else run.cfg.run_dir
    p1, p2 = read_json(p1_dir / "phase1" / "summary.json"), read_json(run.cfg.run_dir / "phase2" / "summary.json")
    if p1 is None or p2 is None:
        return None
    return {"phase1": p1["supervised_tokens"], "phase2": p2["supervised_tokens"],
            "total": p1["supervised_tokens"] + p2["supervised_tokens"]}


def summarize(plan: Plan, rows: list[dict]) -> dict:
    """Per cell x metric: mean, sample std (n - 1) and n over the seeds that have a value, and the paper's number."""
    s = plan.study
    by = {}
    for r in rows:
        by.setdefault((r["cell"], r["metric"]), []).append(r)
    cells = []
    for cell in s.cells:
        entry = {"cell": cell.id, "labels": cell.labels, "runs": [f"runs/{cell.slug}-s{seed}" for seed in s.seeds], "metrics": {}}
        for m in s.metrics:
            values = [r["value"] for r in by.get((cell.id, m.name), []) if r["value"] is not None]
            entry["metrics"][m.name] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
                "values": [{"seed": r["seed"], "value": r["value"]} for r in by.get((cell.id, m.name), [])],
                "paper": s.paper.get(m.name, {}).get(cell.id),
            }
        # What each cell cost in supervised training tokens (baselines are compared at equal cost).
        spent = [t for t in (training_tokens(plan, r) for r in plan.runs if r.cell.id == cell.id) if t]
        entry["training_tokens"] = {k: statistics.fmean(t[k] for t in spent) for k in ("phase1", "phase2", "total")} \
            if spent else None
        cells.append(entry)
    finished = sum(is_done(r.cfg.run_dir, "report") for r in plan.runs)
    return {
        "study": s.name, "question": s.question, "study_file": str(s.path), "base": str(s.base),
        "set": list(s.set), "cli_set": list(s.cli_set), "seeds": list(s.seeds), "axes": {a: list(v) for a, v in s.axes.items()},
        "figure": s.figure, "paper_note": s.paper_note,
        "metrics": {m.name: dataclasses.asdict(m) | {"description": m.describe(), "lower_is_better": m.lower_is_better}
                    for m in s.metrics},
        "runs": {"total": len(plan.runs), "finished": finished, "phase1_runs": sorted(plan.phase1)},
        "cells": cells,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_summary(plan: Plan, rows: list[dict], summary: dict) -> None:
    axes = list(plan.study.axes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study", "cell", "seed", *axes, "metric", "value"])
    for r in rows:
        writer.writerow([plan.study.name, r["cell"], r["seed"], *[r["labels"][a] for a in axes], r["metric"],
                         "" if r["value"] is None else repr(float(r["value"]))])
    write_text(plan.dir / "summary.csv", buf.getvalue())
    write_json(plan.dir / "summary.json", summary)
    write_text(plan.dir / "study.yaml", plan.study.path.read_text(encoding="utf-8"))


def run_study(path: str | Path, out: str | Path = "studies", seeds: list[int] | None = None, overrides: list[str] = (),
              train: bool = True, quiet: bool = False, keep_checkpoints: bool = False) -> Path:
    """Run (or resume) a study and write summary.csv, summary.json, figures and report.html; returns the study folder.
    With `train=False`, only the summary and report are rebuilt from the runs that exist."""
    from rote.study_report import build_study_report
    plan = expand(load_study(path, seeds, overrides), out)
    cost(plan)  # checks what would fail only later in phase 2 (too many training prompts)
    if train:
        execute(plan, quiet, keep_checkpoints)
    rows = collect(plan)
    write_summary(plan, rows, summarize(plan, rows))
    build_study_report(plan.dir)
    return plan.dir
