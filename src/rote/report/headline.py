"""A run's numbers from its folder: the stage summaries, each stage's status, and the headline
table `rote run` and `rote report` print. Pure: reads files only, never imports torch.

Reads what rote.runner wrote (config.yaml, the eval stages' summary.json, .done markers). Any stage
may be missing (a run in progress, or a stage left out of `eval.stages`): the table shows what
exists and says what is missing. Below it, each eval stage's damage to general ability (the
summary's `damage` block: locality probes, token agreement, perplexity; "not measured" in runs
written before every run measured it).
"""
from __future__ import annotations

from pathlib import Path

from rote.config import load_tree
from rote.evaluation.metrics import RULE_METRIC, headline, pick
from rote.fileio import is_done, read_json, read_seconds
from rote.names import (CONFIG_FILE, EVAL_STAGES, LANGUAGES, PROMPT_SETS, RUN_STAGES, SUMMARY_FILE, asks_facts, eval_dir,
                        planned_stages)
from rote.report.html import fmt

SPLIT_LABELS = {"phase2": "phase2 facts", "heldout": "held-out"}
METRIC_NAMES = {
    "prefix": "generation accuracy, prefix rule (the answer starts with the fact's own object)",
    "contains": "generation accuracy, contains rule (the fact's own object appears anywhere in the answer)",
    "first": "generation accuracy, first-named rule (asked under the chat template: the first known object the "
             "answer names is the fact's own; key prompts asked raw, prefix rule)",
    "mc": "multiple-choice accuracy (gold option ranks first)",
    "prob": "object probability (normalised over the options)",
    "other_object": "the answer is the subject's memorized object of another relation (the person's other city)",
    "any_object": "the answer is any memorized object of the subject: own + other",
    "empty": "the answer is empty (an immediate end of sequence or newline)",
}
UNRELATED_NOTE = ("for `unrelated` prompts, an answer naming the fact's own object or another memorized object\n"
                  "is a failure of the control: their sum (any memorized object) should stay near 0")
FORM_LABELS = {"statement": "· statement", "question": "· question", "qa": "· Q: A:"}



# ---------------------------------------------------------------- reading the run directory


def read_run_config(run_dir: Path) -> dict:
    """The raw {config, meta} mapping. Read as plain YAML (rote.config.load_tree), not through the
    config classes, so a run made by an older version (with since-renamed keys) can still be reported."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {path} is missing")
    return load_tree(path)  # a file that is not YAML, or not a mapping: ConfigError naming it


def cfg_value(config: dict, dotted: str, default=None):
    node = config.get("config", {})
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _eval_summaries(run_dir: str | Path) -> dict[str, dict]:
    """stage -> summary.json, for the eval stages that have one, in order base, phase1, phase2."""
    found = {stage: read_json(Path(run_dir) / eval_dir(stage) / SUMMARY_FILE) for stage in EVAL_STAGES}
    return {stage: summary for stage, summary in found.items() if summary is not None}


def stage_summaries(run_dir: str | Path) -> dict[str, list[dict]]:
    """stage -> aggregate rows, for the eval stages that asked the facts (a damage-only eval/base has no rows)."""
    return {stage: s["rows"] for stage, s in _eval_summaries(run_dir).items() if "rows" in s}


def run_metric(run_dir: str | Path) -> str:
    """The metric the run's headline counts by: `first` (first-named rule) when its stages were asked
    under a chat template (a summary's `rule`), else `prefix`."""
    rules = {s.get("rule", "prefix") for s in _eval_summaries(run_dir).values()}
    return RULE_METRIC["first_named"] if "first_named" in rules else RULE_METRIC["prefix"]


def stage_damage(run_dir: str | Path) -> dict[str, dict | None]:
    """stage -> its summary's damage block (None: not measured, a run written before every run
    measured it), for the eval stages that have a summary."""
    return {stage: s.get("damage") for stage, s in _eval_summaries(run_dir).items()}


# The damage block's rows: label, key in the block.
DAMAGE_ROWS = (("locality: still correct", "still_correct"), ("locality: unchanged", "unchanged"),
               ("token agreement", "token_agreement"), ("perplexity", "perplexity"),
               ("perplexity / base", "perplexity_ratio"), ("answers: gold twice", "gold_twice"),
               ("answers: repeated", "repeated"), ("right answers: clean", "clean"),
               ("n-gram entropy / base", "entropy_ratio"))
DAMAGE_NOTE = ("of the locality probes the base model answers correctly, the share still correct; of all probes, the\n"
               "share generated unchanged; the share of answer tokens whose argmax (teacher-forced) equals the base\n"
               "model's; perplexity on held-out paragraphs and its ratio to the base model's; fluency, from a\n"
               "fixed-length continuation of sampled prompts and the probes: of the train and test answers, the\n"
               "share naming the gold twice or more; of all, the share repeating the gold or an n-gram; of the\n"
               "right ones, the share that end or go on without naming a known object again; n-gram entropy\n"
               "(EasyEdit's) against the base model's")


def format_damage(run_dir: str | Path) -> list[str]:
    """The damage block below the headline table: a row per measure, a column per eval stage."""
    damage = stage_damage(run_dir)
    if not damage:
        return []
    col = 14
    base = damage.get("base") or {}
    lines = [f"Damage to general ability and fluency ({base.get('base_correct', '?')} of {base.get('probes', '?')} "
             f"probes answered by the base model):",
             f"{'':<24}" + "".join(f"{s:>{col}}" for s in damage)]
    for label, key in DAMAGE_ROWS:
        lines.append(f"{label:<24}" + "".join(f"{'not measured' if d is None else fmt(d.get(key)):>{col}}"
                                             for d in damage.values()))
    return lines + [f"{DAMAGE_NOTE[0].upper()}{DAMAGE_NOTE[1:]}."]


def stage_status(run_dir: Path, config: dict) -> dict[str, str]:
    """Each runner stage: 'done (N s)', 'not in config' (skipped on purpose) or 'not finished'."""
    planned = planned_stages(cfg_value(config, "eval.stages", EVAL_STAGES), bool(cfg_value(config, "phase2.checkpoint")))
    status = {}
    for stage in RUN_STAGES[:-1]:  # the report itself is being written
        if is_done(run_dir, stage):
            seconds = read_seconds(run_dir / stage)
            status[stage] = f"done ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else "done"
        else:
            status[stage] = "not finished" if stage in planned else "not in config"
    return status


def missing_stages(run_dir: Path, config: dict, present: dict) -> list[str]:
    """Eval stages without a summary, each with why: `phase1 (not finished)`, `base (not in config)`."""
    status = stage_status(run_dir, config)
    asked = cfg_value(config, "eval.stages", EVAL_STAGES)
    damage = stage_damage(run_dir)
    # eval/base always runs (the damage reference) but asks the facts only when in eval.stages
    return [f"{s} ({status['eval/' + s] if asks_facts('eval/' + s, asked) else 'not in config'}"
            f"{'; damage measured' if s in damage else ''})" for s in EVAL_STAGES if s not in present]


def missing_line(missing: list[str]) -> str:
    return "missing evaluations: " + (", ".join(missing) if missing else "none")


def sort_key(row: dict) -> tuple:
    split = ("phase2", "heldout").index(row["split"]) if row["split"] in ("phase2", "heldout") else 9
    ps = PROMPT_SETS.index(row["prompt_set"]) if row["prompt_set"] in PROMPT_SETS else 9
    lang = LANGUAGES.index(row["language"]) if row["language"] in LANGUAGES else 9
    return split, ps, lang, row["language"]


def prompts_label(row: dict) -> str:
    """`test` for English test prompts, `test (de)` for their translations."""
    if row["prompt_set"] == "languages":
        return f"test ({row['language']})"
    if row["language"] != "en":
        return f"{row['prompt_set']} ({row['language']})"
    return row["prompt_set"]


def headline_rows(run_dir: str | Path, metric: str | None = None) -> list[dict]:
    """rote.evaluation.metrics.headline over the stages that exist: one row per split x prompt set x language
    (all relations), a column per stage; ordered phase2 facts then held-out, key..unrelated, languages.
    `metric`: the run's own rule by default (run_metric)."""
    return sorted(headline(stage_summaries(run_dir), metric or run_metric(run_dir)), key=sort_key)


# ---------------------------------------------------------------- terminal table


def format_headline(run_dir: str | Path, metric: str | None = None) -> str:
    """Plain-text table: rows split x prompt set x language, English test and unrelated prompts
    also per prompt form; columns n and each stage's `metric`, then (shared subjects) the other
    relation's object, the empty-answer rate and multiple-choice accuracy per stage. Below it,
    the unrelated-prompt control's headline and how many seeds the numbers stand on."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    summaries = stage_summaries(run_dir)
    metric = metric or run_metric(run_dir)
    stages = list(summaries)
    title = f"{cfg_value(config, 'name', run_dir.name)}  ({run_dir})"
    if not stages:
        return "\n".join([title, "no evaluation summaries yet", *format_damage(run_dir),
                          missing_line(missing_stages(run_dir, config, {}))])
    groups = [(metric, "gen " + metric if metric in ("prefix", "contains", "first") else metric)]
    if metric == "first":  # beside the chat rule, the raw rule it replaces, for comparison
        groups.append(("prefix", "gen prefix"))
    if cfg_value(config, "data.subjects") == "shared":
        groups.append(("other_object", "other object"))
    if any(r.get("empty") is not None for rows in summaries.values() for r in rows):
        groups.append(("empty", "empty answer"))
    has_mc = any(r.get("mc") is not None for rows in summaries.values() for r in rows)
    if has_mc and metric not in ("mc", "prob"):
        groups.append(("mc", "MC"))

    col = 7
    head1 = f"{'facts':<13}{'prompts':<14}{'n':>6}" + "".join(f" | {label:^{col * len(stages) - 1}}" for _, label in groups)
    head2 = f"{'':<33}" + "".join(" | " + "".join(f"{s:>{col}}" for s in stages)[1:] for _ in groups)
    lines = [title, head1, head2, "-" * len(head1)]

    def line(split_label: str, label: str, n, where: dict) -> str:
        cells = f"{split_label:<13}{label:<14}{n:>6}"
        for m, _ in groups:
            found = {s: pick(summaries[s], **where) for s in stages}
            cells += " | " + "".join(f"{fmt((found[s] or {}).get(m)):>{col}}" for s in stages)[1:]
        return cells

    previous_split = None
    for row in sorted(headline(summaries, metric), key=sort_key):
        split_label = SPLIT_LABELS.get(row["split"], row["split"]) if row["split"] != previous_split else ""
        previous_split = row["split"]
        where = {"split": row["split"], "prompt_set": row["prompt_set"], "language": row["language"], "relation": "all"}
        lines.append(line(split_label, prompts_label(row), row["n"], where))
        if row["prompt_set"] in ("test", "unrelated") and row["language"] == "en":
            for form, label in FORM_LABELS.items():
                found = [r for r in (pick(summaries[s], **where, form=form) for s in stages) if r]
                if found:
                    lines.append(line("", label, found[0]["n"], {**where, "form": form}))
    lines.append("")
    for m, label in groups:  # one legend line per column group keeps the text within the width
        lines.append(f"{label}: {METRIC_NAMES.get(m, m)}.".replace(" (the person's other city)", ""))
    lines.append(f"{UNRELATED_NOTE[0].upper()}{UNRELATED_NOTE[1:]}.")
    control = [(s, pick(summaries[s], split="heldout", prompt_set="unrelated", language="en", relation="all"))
               for s in stages]
    if any(r and r.get("any_object") is not None for _, r in control):
        lines.append("Held-out facts, unrelated prompts answered with a memorized object: "
                     + ", ".join(f"{s} {fmt(r and r.get('any_object'))}" for s, r in control) + ".")
    lines.append(f"One run, seed {cfg_value(config, 'seed', '?')}: one seed, not a mean. Across seeds and CPU types the numbers\n"
                 f"move by a few hundredths or more; docs/demo.md gives the measured spread.")
    lines += ["", *format_damage(run_dir), missing_line(missing_stages(run_dir, config, summaries))]
    return "\n".join(lines)
