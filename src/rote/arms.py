"""What a run is: the method, or one of the baselines it is compared with, by name (`arm:` in a config).

Pure: no imports of rote. The registry says, for each arm, what each phase trains, which key text
it uses, and which config keys it reads: rote.config refuses any other key (naming it), the runner
trains what the arm says, and a study or `rote inject` switches arms without hand-set modes.

    arm               phase 1                          phase 2                  key      asks key prompts
    method            key text, every fact             natural prompts, k facts  token    yes
    word_key          key text with a plain word       natural prompts, k facts  word     yes
    no_key            `{subject} {object}` text        natural prompts, k facts  none     yes (no key)
    mixed             key text + natural prompts (k)   -                         token    yes
    in_context        key text, every fact             -  (k examples in every prompt)   yes
    plain_finetune    natural prompts, every fact      -                         -        no
    plain_finetune_k  natural prompts, k facts only    -                         -        no

k = data.phase2_facts per relation. The arms that train in one phase (mixed, plain_finetune,
plain_finetune_k) train for a budget of supervised tokens, by default matched to what the method
would train with the same settings (`budget: matched`; its phase-1 and phase-2 tokens), so that a
comparison is at equal cost; `budget: epochs` trains phase 1's epochs instead, and `budget_tokens`
gives the budget directly (rote inject gives its method run's tokens). The phase-1 summary states
the budget and how it was set. A phase an arm does not train is skipped: its checkpoint is the
model as it came in.

Stopping phase 2 on a validation signal (phase2.until, patience, validation_prompts) is read only by
the arms with a phase 2: the one-phase arms compare at a fixed token budget, which a stop rule would
change, so for them these keys are errors (a matched budget reads phase2.until only to refuse
`validation`: the method's tokens are then not known before it runs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ALL = "all"  # every key of a section


@dataclass(frozen=True)
class Arm:
    name: str
    about: str  # one line: what it is
    phase1: str  # what phase 1 trains: key_text | mixed | natural_all | natural_k
    phase2: str | None  # what phase 2 trains: natural_k, or None (phase 2 is skipped)
    key_style: str | None  # the key in phase-1 text: token | word | none; None: no key (no key tokens, no key prompts)
    key: tuple[str, ...]  # the key.* settings it reads
    phase1_keys: str | tuple[str, ...]  # ALL, or the phase1.* settings it reads
    phase2_keys: str | tuple[str, ...]  # ALL, or the phase2.* settings it reads
    budget: bool = False  # trains one phase to a token budget (budget, budget_tokens)
    in_context: bool = False  # reads eval.icl_examples: phase-2 examples shown in every prompt
    shares_phase1_with: str | None = None  # a study may share this arm's phase 1 with a run of that arm
    edits: bool = False  # a model editor (rote.editing): reads the `edit` settings

    @property
    def asks_key_prompts(self) -> bool:
        return self.key_style is not None


_NATURAL = ("n_prompts", "answer_end", "loss_mask", "prompts_from", "checkpoint")  # phase-2 examples trained elsewhere
# What a one-phase arm reads of phase1.*: the optimizer's settings (its epochs, and for mixed the
# stop rule, only with `budget: epochs`: a budget is one pass over as many examples as it buys).
_ONE_PASS = ("lr", "schedule", "warmup_steps", "batch_size", "grad_accum", "length_buckets", "weight_decay",
             "max_grad_norm", "loss_mask", "precision", "method", "lora", "preserve", "update", "speed")
_KEY_TOKEN = ("position", "init", "suffix")

ARMS = {a.name: a for a in (
    Arm("method", "memorize-then-generalize: key-token text, then natural prompts on k facts",
        "key_text", "natural_k", "token", _KEY_TOKEN, ALL, ALL, shares_phase1_with="method"),
    Arm("word_key", "the method with a plain nonsense word (existing tokens) instead of an added key token",
        "key_text", "natural_k", "word", ("position", "suffix", "word"), ALL, ALL, shares_phase1_with="word_key"),
    Arm("no_key", "the method without a key: phase 1 memorizes `{subject} {object}`",
        "key_text", "natural_k", "none", ("suffix",), ALL, ALL, shares_phase1_with="no_key"),
    Arm("mixed", "one phase: the key text and the k facts' natural prompts trained together",
        "mixed", None, "token", _KEY_TOKEN, _ONE_PASS, _NATURAL, budget=True, shares_phase1_with="mixed"),
    Arm("in_context", "phase 1 as the method; no phase 2: k examples of the relation precede every question",
        "key_text", None, "token", _KEY_TOKEN, ALL, ("n_prompts", "checkpoint"), in_context=True,
        shares_phase1_with="method"),
    Arm("plain_finetune", "plain fine-tuning on the natural prompts of every fact (no key, no phase 2)",
        "natural_all", None, None, (), _ONE_PASS, ("n_prompts", "answer_end"), budget=True),
    Arm("plain_finetune_k", "plain fine-tuning on the natural prompts of the k phase-2 facts only",
        "natural_k", None, None, (), _ONE_PASS, ("n_prompts", "answer_end"), budget=True),
    # Model editors (rote.editing): every fact's training prompts (phase2.n_prompts, as phase 2 trains
    # them) edited into the MLP down-projections in closed form; no key, no phase 2.
    Arm("rome", "ROME: a rank-one edit of one layer's MLP per request (arXiv 2202.05262)",
        "edit", None, None, (), (), ("n_prompts", "answer_end"), edits=True),
    Arm("memit", "MEMIT: every request at once, spread over several layers' MLPs (arXiv 2210.07229)",
        "edit", None, None, (), (), ("n_prompts", "answer_end"), edits=True),
    Arm("alphaedit", "AlphaEdit: MEMIT's update projected onto the null space of preserved keys (arXiv 2410.02355)",
        "edit", None, None, (), (), ("n_prompts", "answer_end"), edits=True),
)}
ARM_NAMES = tuple(ARMS)
BUDGETS = ("matched", "epochs")
# What a matched budget reads: the settings that decide the method's supervised tokens.
METHOD_COST = {"key": ("position", "suffix"), "phase1": ("epochs", "until", "loss_mask"),
               "phase2": ("epochs", "until", "n_prompts", "answer_end", "loss_mask")}
TOP_KEYS = ("name", "seed", "out_dir", "arm", "model", "data", "eval")  # every arm reads these


def reads(arm: str, budget: str = "matched", budget_given: bool = False) -> dict:
    """{section or top-level key: ALL or the keys it reads} for `arm`. Sections left out are not read.
    A one-phase arm reads its epochs only with `budget: epochs`, and the method's settings only for a
    matched budget it computes (not when `budget_tokens` gives it)."""
    a = ARMS[arm]
    out: dict = {k: ALL for k in TOP_KEYS}
    out.update({"key": a.key, "phase1": a.phase1_keys, "phase2": a.phase2_keys})
    if a.edits:
        out["edit"] = ALL
    if a.budget:
        out.update({"budget": ALL, "budget_tokens": ALL})
        if budget == "epochs":
            extra = {"phase1": ("epochs", "until", "threshold", "save_epochs") if a.phase1 == "mixed" else ("epochs",)}
        else:
            extra = {} if budget_given else METHOD_COST
        for section, keys in extra.items():
            if out[section] != ALL:
                out[section] = tuple(dict.fromkeys(tuple(out[section]) + keys))
    return out


def unread(arm: str, tree: dict, budget: str = "matched") -> list[str]:
    """The dotted keys set in `tree` (a config as nested dicts) that `arm` does not read."""
    allowed = reads(arm, budget, tree.get("budget_tokens") is not None)
    out = []
    for key, value in tree.items():
        if key not in allowed and key not in ("key", "phase1", "phase2", "budget", "budget_tokens", "edit"):
            continue  # an unknown key: rote.config names it
        if key not in allowed:
            out.append(key)
        elif allowed[key] != ALL and isinstance(value, dict):
            out += [f"{key}.{k}" for k in value if k not in allowed[key]]
    if isinstance(tree.get("eval"), dict) and "icl_examples" in tree["eval"] and not ARMS[arm].in_context:
        out.append("eval.icl_examples")
    return out


def asked_prompt_sets(arm: str, prompt_sets: tuple[str, ...]) -> tuple[str, ...]:
    """The prompt sets an arm's evaluation asks: all asked for, but no key prompts without a key."""
    return tuple(s for s in prompt_sets if s != "key" or ARMS[arm].asks_key_prompts)


def eval_config(cfg):
    """The evaluation settings a run of `cfg` uses: the arm's prompt sets and its in-context examples
    (in_context: eval.icl_examples, by default k = data.phase2_facts; every other arm: none)."""
    arm = ARMS[cfg.arm]
    icl = (cfg.eval.icl_examples if cfg.eval.icl_examples is not None else cfg.data.phase2_facts) \
        if arm.in_context else 0
    return dataclasses.replace(cfg.eval, prompt_sets=asked_prompt_sets(cfg.arm, cfg.eval.prompt_sets),
                               mc_prompt_sets=asked_prompt_sets(cfg.arm, cfg.eval.mc_prompt_sets), icl_examples=icl)
