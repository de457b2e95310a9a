"""A study file: what `rote study` reads, checked key by key. Pure: no torch.

A study is one of the paper's experiments as one command: a grid of run configs x seeds, phase 1
trained once where cells share it (rote.study.plan), a tidy summary with the spread across seeds
(rote.study.collect) and a report (rote.report.study); rote.study_runs.run_study runs it.

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
                                    # | tradeoff (the 1st metric against locality and perplexity ratio)

A cell's id is `axis=label,...` in grid order ("default" for an empty grid); its runs are
`<out>/<study>/runs/<axis-label_...>-s<seed>`.

Reuse. Phase 1 depends on the model, the data (not on k: `data.phase2_facts` only splits the
same fact set), the key, the phase1 section and the seed. Cells that agree on these share one
phase-1 run, `runs/p1-<hash>-s<seed>` (data, eval/base, phase 1, eval/phase1; its facts all
held out, its `train` prompts the most any of its cells trains on). Every cell is then a
phase-2-only run from that checkpoint (`phase2.checkpoint`), with its own split of the same
facts (the runner re-splits the phase-1 run's facts by the cell's k). Base and phase-1 metrics of a cell are re-aggregated from the phase-1 run's
predictions with the cell's split and training prompts. The runner resumes finished stages,
so an interrupted study resumes by running the same command again.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rote import config as config_mod
from rote.errors import ConfigError, read_yaml
from rote.evaluation.metrics import HEADLINE, METRICS
from rote.names import EVAL_STAGES, PROMPT_FORMS, PROMPT_SETS, SUMMARY_SPLITS

TOP_KEYS = ("study", "question", "base", "set", "seeds", "grid", "metrics", "paper", "paper_note", "figure")
METRIC_KEYS = ("stage", "split", "prompt_set", "language", "metric", "relation", "form")
FIGURES = ("line", "heatmap", "bars", "tradeoff")
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
    for key, allowed in (("stage", EVAL_STAGES), ("split", SUMMARY_SPLITS), ("prompt_set", PROMPT_SETS),
                         ("metric", (*METRICS, HEADLINE))):
        if spec[key] not in allowed:
            _fail(path, f"{where}.{key}", f"{spec[key]!r} is not one of {list(allowed)}")
    m = Metric(name, spec["stage"], spec["split"], spec["prompt_set"], spec["metric"],
               str(spec.get("language", "en")), str(spec.get("relation", "all")), str(spec.get("form", "all")))
    if m.form not in ("all",) + PROMPT_FORMS:
        _fail(path, f"{where}.form", f"{m.form!r} is not one of {['all', *PROMPT_FORMS]}")
    if m.form != "all" and m.relation != "all":  # summary rows break forms out over all relations only
        _fail(path, f"{where}.form", f"form {m.form!r} with relation {m.relation!r}: summaries have a row per "
                                     "form over all relations, not per relation; set one of the two")
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


def override_keys(overrides) -> set[str]:
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
    raw = read_yaml(path, StudyError) or {}
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
        taken = override_keys(given) & {"name", "seed", "out_dir"}
        if taken:
            _fail(path, label, f"'{sorted(taken)[0]}' is set by the study for each run (use seeds: / --seeds and --out)")
    # A cell's overrides come last, so a key that every cell sets cannot be changed by `set` or
    # --set: say so rather than ignore it. (A key only some cells set is fine: the others take it.)
    every_cell = set.intersection(*[override_keys(c.overrides) for c in cells]) if cells else set()
    for label, given in (("set", study_set), ("--set", cli_set)):
        clash = _clash(override_keys(given), every_cell)
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
            raw = read_yaml(path, StudyError) or {}
            if not isinstance(raw, dict):
                raw = {"question": "(not a study: no mapping at the top level)"}
            out.append((str(raw.get("study", path.stem)), str(raw.get("question", "")), path))
        except StudyError as e:  # not YAML, or not UTF-8
            out.append((path.stem, f"(not readable: {e})", path))
    return out
