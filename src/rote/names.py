"""The names every layer shares: stages, splits, prompt sets, languages, prompt forms, run-folder files.

Pure (no imports): each name is defined here once, so that the runner, the evaluation, the study and
the report cannot drift apart on, say, which prompt sets exist or which stages a run goes through.

A run folder (`rote run`):

    config.yaml              the resolved config, rote version, git commit
    facts.jsonl splits.json  the fact set and its phase-2 / held-out split
    key_tokens.json          the key tokens added to the tokenizer and their initialisation
    phase1/ phase2/          metrics.jsonl, summary.json, timing.json, checkpoint/ (epochs/ for saved epochs)
    eval/<stage>/            predictions.jsonl, locality.jsonl (damage probes), summary.json, timing.json
    report/                  report.html, figures/
    probe/                   geometry.json, figures/ (`rote probe`)
    <stage>/.done            written last: the stage is finished
"""
from __future__ import annotations

# The stages of a run, in order; each is a folder of the run with a .done marker when finished.
RUN_STAGES = ("data", "eval/base", "phase1", "eval/phase1", "phase2", "eval/phase2", "report")
# The models a run evaluates: the base model (with key tokens), after phase 1, after phase 2.
EVAL_STAGES = ("base", "phase1", "phase2")
# A fact is a phase-2 fact (seen with natural prompts in phase 2) or held out; "all" rolls both up.
SPLITS = ("phase2", "heldout")
SUMMARY_SPLITS = SPLITS + ("all",)  # the splits of a summary row
# Every prompt set evaluation can ask (rote.evaluation.queries builds them).
PROMPT_SETS = ("key", "train", "test", "unrelated", "languages", "reverse", "two_hop", "repurposed")
# The languages of the shipped relations: English, and the test prompts' translations.
LANGUAGES = ("en", "de", "es", "zh", "ja")
OTHER_LANGUAGES = LANGUAGES[1:]  # what the `languages` prompt set asks
# The prompt sets whose hidden states `rote probe` compares with the key text's.
PROBED_PROMPT_SETS = ("train", "test", "unrelated")
# The three shapes a natural prompt comes in (rote.data.templates.prompt_form).
PROMPT_FORMS = ("statement", "question", "qa")

# Files of a run folder.
CONFIG_FILE = "config.yaml"
FACTS_FILE = "facts.jsonl"
SPLITS_FILE = "splits.json"
KEY_TOKENS_FILE = "key_tokens.json"
SUMMARY_FILE = "summary.json"
TIMING_FILE = "timing.json"
PREDICTIONS_FILE = "predictions.jsonl"
LOCALITY_FILE = "locality.jsonl"  # an eval stage's locality probe records (rote.evaluation.locality)
FLUENCY_FILE = "fluency.jsonl"  # an eval stage's fixed-length continuations (rote.evaluation.fluency)
METRICS_FILE = "metrics.jsonl"
DONE_FILE = ".done"
CHECKPOINT_DIR = "checkpoint"


def eval_dir(stage: str) -> str:
    """The run-folder path of an evaluation stage: `eval/phase1`."""
    return f"eval/{stage}"


def planned_stages(eval_stages, from_checkpoint: bool) -> tuple[str, ...]:
    """The stages of RUN_STAGES a run goes through: evaluations only of the models in `eval_stages`,
    and no phase 1 (nor its evaluation) when phase 2 starts from another run's checkpoint. eval/base
    is always run: its damage measures (locality, perplexity) are the reference of the later stages;
    it asks the run's facts only when `base` is in `eval_stages` (asks_facts)."""
    out = []
    for stage in RUN_STAGES:
        if stage.startswith("eval/") and stage != "eval/base" and stage.split("/", 1)[1] not in eval_stages:
            continue
        if from_checkpoint and stage in ("phase1", "eval/phase1"):
            continue
        out.append(stage)
    return tuple(out)


def asks_facts(stage: str, eval_stages) -> bool:
    """Whether an evaluation stage asks the run's facts (predictions.jsonl, summary rows): every one
    but eval/base when `base` is not in `eval_stages`, which then only measures damage."""
    return stage != "eval/base" or "base" in eval_stages
