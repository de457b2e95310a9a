"""Run configuration: frozen dataclasses loaded from YAML, with `a.b=value` overrides. Pure: no torch.

Every key is checked: an unknown key (a phase-1 key under phase2 included: the two phases are
separate classes), a value of the wrong type, a list element or choice outside its allowed set
(`Literal`), or a key the run's arm does not read (rote.arms) is an error that names the key and
the file it came from; ranges and combinations are rote.config_checks. `to_dict` writes only the
keys the arm reads, so a run folder's config.yaml loads back as the same config.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rote import strict_yaml
from rote.arms import ARM_NAMES, ARMS, BUDGETS, unread
from rote.config_checks import check_values
from rote.errors import ConfigError, RunError, one_line, quote, read_yaml
from rote.names import CONFIG_FILE, EVAL_STAGES, OTHER_LANGUAGES, PROMPT_SETS


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m"  # bundled name, local folder or Hugging Face hub id
    dtype: Literal["float32", "bfloat16"] = "float32"  # weights in memory (master copy)
    # Natural prompts rendered under the tokenizer's chat template (rote.data.chat): `auto` when the
    # tokenizer has one. `off` by default: a base model's tokenizer often ships a template too
    # (Qwen2.5), and the paper's studies ask raw text; the demo and `rote inject` use `auto`.
    chat_template: Literal["auto", "on", "off"] = "off"
    # Under a template, statement prompts open the assistant's turn (`assistant`) or are a user turn
    # asking to complete them (`user`).
    chat_statements: Literal["assistant", "user"] = "assistant"


@dataclass(frozen=True)
class DataConfig:
    # Relations to memorize: built-in names (src/rote/data/relations) or a `relations_file`'s.
    relations: tuple[str, ...] = ("place_of_birth", "place_of_residence")
    facts_per_relation: int = 100  # N: facts per relation (fictional subjects, real objects)
    phase2_facts: int = 50  # k: facts per relation seen with natural prompts in phase 2
    # `shared`: each subject has a fact in every relation (only the key tells them apart).
    subjects: Literal["separate", "shared"] = "separate"
    n_options: int = 100  # multiple-choice options per fact, gold included
    relations_file: str | None = None  # extra user relations (YAML with a list under `relations:`)
    # Two-hop data: [first, second], e.g. [mother, place_of_birth]: every object of `first` (a
    # person) also gets a memorized `second` fact, held out from phase 2, so "Where was
    # {subject}'s mother born?" has an answer that needs both facts.
    two_hop: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyConfig:
    position: Literal["middle", "first"] = "middle"  # `{subject} {key} {object}` or `{key} {subject} {object}`
    init: Literal["mean", "random"] = "mean"  # the key tokens' embeddings: the mean of the existing ones, or random
    suffix: Literal["none", "period", "eos"] = "eos"  # what follows the object in phase-1 text
    word: str = "blicket"  # arm word_key: the plain word (with the relation's id) that stands for the relation
    # Set by the arm (rote.arms), not in a config file: an added token, a plain word, or no key.
    style: Literal["token", "word", "none"] = "token"


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA scaling (alpha / r)
    dropout: float = 0.0  # LoRA dropout
    # The modules LoRA adapts (the key tokens' embedding rows train beside them).
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class PreserveConfig:
    """Levers against damage (rote.levers, rote.training.preserve): examples whose target is the
    base model's own behaviour, trained in the same optimizer steps as the phase's own examples.
    Each count is 0 (off) by default, so a config without `preserve:` trains as before."""
    # Questions about the subjects this phase trains that are not any relation's question
    # (rote/data/contrast.yaml): this many templates per subject.
    contrast: int = 0
    # General text (`text`: rote/data/replay.txt, cut into 32-token windows; `samples`: the base
    # model's own continuations of rote/data/replay_openings.yaml): this many sequences.
    replay: int = 0
    replay_source: Literal["text", "samples"] = "text"  # replay's source: text windows or the base model's own samples
    # Well-known facts the base model answers correctly (rote/data/known_facts.yaml): at most this many.
    known_facts: int = 0
    # Contrast and known facts: `kl` matches the base model's next-token distributions along its
    # own greedy continuation; `greedy` trains that continuation (cross-entropy). Replay is always `kl`.
    target: Literal["kl", "greedy"] = "kl"
    weight: float = 1.0  # loss = phase loss + weight x preserve loss (each a mean over its tokens)
    # Anchors per optimizer step; None: as many as makes one pass over them per epoch of the phase.
    batch_size: int | None = None


@dataclass(frozen=True)
class UpdateConfig:
    """Where the update goes (rote.training.trainable). The defaults train every weight."""
    layers: tuple[int, ...] = ()  # decoder layers trained (0-based; -1 the last); empty: all
    modules: tuple[str, ...] = ()  # module names trained inside those layers (mlp, self_attn, down_proj, ...); empty: all
    # The token embedding (and the output head, tied or not): every row, only the key tokens' rows, or none.
    embeddings: Literal["all", "key_rows", "frozen"] = "all"
    # With key_rows: `masked` computes the whole matrix's gradient and zeroes all but the key rows;
    # `rows` computes only the key rows' (the same update within bf16 rounding, a faster step).
    key_rows_gradient: Literal["masked", "rows"] = "masked"


@dataclass(frozen=True)
class SpeedConfig:
    """How a training step runs (rote.training.speedups). Each switch keeps one step's update within
    bf16 rounding noise (bench/bench_train_step.py measures it) and is off by default: `eager` still
    moved a whole study's results (rote.training.speedups)."""
    attn_implementation: Literal["eager", "sdpa"] | None = None  # attention kernel while training; None: as loaded
    keep_memory: bool = False  # freed buffers stay in the process (glibc): no fresh pages faulted in every step


@dataclass(frozen=True)
class TrainConfig:
    """What the training loop (rote.training.loop) and the runner read of either phase."""
    epochs: int = 20  # epochs over the phase's examples (with `until`, the cap)
    lr: float = 1e-4  # peak learning rate (AdamW)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"  # learning-rate schedule after the warmup
    warmup_steps: int = 5  # optimizer steps of linear warmup
    batch_size: int = 8  # examples per optimizer step (per process)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    length_buckets: bool = False  # batch examples of similar length (less padding); same examples per epoch
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradients clipped to this global norm
    # Which target tokens carry the loss: the object, the subject and the object, or every token.
    loss_mask: Literal["object", "subject_object", "all"] = "object"
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast; master weights stay in model.dtype
    method: Literal["full", "lora"] = "full"  # `full` fine-tuning or `lora` (PEFT, merged back into the checkpoint)
    lora: LoraConfig = field(default_factory=LoraConfig)
    preserve: PreserveConfig = field(default_factory=PreserveConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass(frozen=True)
class Phase1Config(TrainConfig):
    """Phase 1 memorizes every fact's key-token text."""
    until: Literal["epochs", "memorized"] = "epochs"  # `memorized`: stop once key-token accuracy >= threshold
    threshold: float = 1.0  # `until: memorized`: the key-token accuracy that stops phase 1
    save_epochs: tuple[int, ...] = ()  # extra checkpoints kept for probing the trajectory


@dataclass(frozen=True)
class Phase2Config(TrainConfig):
    """Phase 2 trains briefly on a few examples with natural prompts: its own defaults."""
    epochs: int = 1
    lr: float = 5e-5
    schedule: Literal["cosine", "constant", "linear"] = "constant"
    warmup_steps: int = 0
    n_prompts: int = 1  # training prompts per fact (also the plain arms' and in_context's)
    # What ends a trained answer after a natural prompt (rote.data.templates.answer_target): nothing,
    # a period, or the end of sequence; under a chat template the answer always ends the assistant's turn.
    answer_end: Literal["none", "period", "eos"] = "none"
    prompts_from: str | None = None  # train with this relation's prompts (re-purposing the key)
    checkpoint: str | None = None  # start from this phase-1 checkpoint folder (another run's)
    # `validation`: after each epoch, greedy prefix accuracy of the phase-2 facts asked with training
    # prompts phase 2 does not train and evaluation never asks (rote.data.prompt_hygiene.validation_prompts);
    # stop after `patience` epochs without improvement and keep the best epoch's weights (ties: the
    # earlier). `epochs` is then the cap. A gentler schedule (lower lr, more epochs) then needs no
    # guess of how many epochs to train. Only the arms with a phase 2 (method, word_key, no_key).
    until: Literal["epochs", "validation"] = "epochs"
    patience: int = 1  # until: validation: epochs without improvement before stopping
    validation_prompts: int = 2  # until: validation: validation prompts per fact


@dataclass(frozen=True)
class EditConfig:
    """The model editors' settings (arms rome, memit, alphaedit: rote.editing). Defaults as the papers'
    code for Llama-size models: MEMIT's layers 4-8, ROME's layer 5."""
    layers: tuple[int, ...] = (4, 5, 6, 7, 8)  # MEMIT and AlphaEdit: the down-projections edited (targets at the last)
    rome_layer: int = 5  # ROME: the one layer whose down-projection it edits
    v_steps: int = 25  # Adam steps that optimize each request's target shift of the residual stream
    v_lr: float = 0.5  # their learning rate
    v_weight_decay: float = 1e-3  # weight of the shift's squared norm (relative to the layer output's)
    clamp_norm: float = 4.0  # the shift's norm stays below this many times the layer output's
    kl_factor: float = 0.0625  # weight of the KL that keeps "{subject} is a" as the unedited model answers it
    mom2_tokens: int = 20000  # tokens of general text (rote/data/replay.txt) the keys' second moment is measured on
    mom2_weight: float = 15000.0  # MEMIT: the second moment's weight against the edited keys
    nullspace_threshold: float = 2e-2  # AlphaEdit: eigenvalues below this span the null space an update keeps to
    l2: float = 10.0  # AlphaEdit: the ridge term of its solve


EvalStage = Literal[EVAL_STAGES]
PromptSet = Literal[PROMPT_SETS]
Language = Literal[OTHER_LANGUAGES]


@dataclass(frozen=True)
class EvalConfig:
    # The prompt sets asked at every eval stage (rote.evaluation.queries).
    prompt_sets: tuple[PromptSet, ...] = ("key", "train", "test", "unrelated", "languages")
    languages: tuple[Language, ...] = OTHER_LANGUAGES  # the `languages` prompt set's
    prompts_per_set: int = 10  # at most this many prompts of each set per fact
    # New tokens per answer; None: the longest gold answer's tokens + 2 (a smaller value is an
    # error, since the longer answers could never be scored right).
    max_new_tokens: int | None = None
    multiple_choice: bool = True  # score the facts' options by log-probability (eval.mc_prompt_sets)
    # The prompt sets scored by multiple choice (when multiple_choice is on); generation asks all.
    mc_prompt_sets: tuple[PromptSet, ...] = PROMPT_SETS
    batch_size: int = 64  # prompts per generation batch; scoring batches options of several prompts
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast for generation and multiple choice; the damage measures run in float32
    # Fluency (rote.evaluation.fluency): this many English prompts of each of the train, test and
    # unrelated sets, and as many locality probes, continued a fixed length at every eval stage; 0: not measured.
    fluency_prompts: int = 24
    stages: tuple[EvalStage, ...] = EVAL_STAGES  # the stages whose model is asked the facts (eval/base always measures damage)
    # Arm in_context: this many phase-2 examples of the fact's relation (training prompt + answer,
    # one per line) precede every natural-language prompt; default k (data.phase2_facts).
    icl_examples: int | None = None
    # The relation whose test prompts the `repurposed` prompt set asks (default: phase2.prompts_from);
    # set it without prompts_from to ask a control run the same questions.
    repurposed_prompts: str | None = None


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"  # the run folder's name, under out_dir
    seed: int = 0  # seeds the fact set, its split, the options, training order and key initialisation
    out_dir: str = "runs"  # parent folder of the run folder
    arm: Literal[ARM_NAMES] = "method"  # what the run is: the method or a baseline (rote.arms)
    # One-phase arms (mixed, plain_finetune, plain_finetune_k): train to the method's supervised
    # tokens with the same settings (`matched`), or for phase 1's epochs (`epochs`); budget_tokens
    # gives the budget directly.
    budget: Literal[BUDGETS] = "matched"
    budget_tokens: int | None = None  # a one-phase arm's budget of supervised tokens, given directly
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    key: KeyConfig = field(default_factory=KeyConfig)
    phase1: Phase1Config = field(default_factory=Phase1Config)
    phase2: Phase2Config = field(default_factory=Phase2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    edit: EditConfig = field(default_factory=EditConfig)  # read by the editor arms only

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ---------------------------------------------------------------- building from dicts


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check (and gently convert) one value against a type hint."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(kind, value, where)
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(typing.get_args(kind)):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on / off as true / false
        if value not in typing.get_args(kind):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(kind))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        (inner, _) = typing.get_args(kind)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        # YAML 1.1 reads `3e-4` as a string; accept anything float() reads.
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {kind!r} at {where}")


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        other = {Phase1Config: ("phase 2", Phase2Config), Phase2Config: ("phase 1", Phase1Config)}.get(cls)
        hint = f"; it is a {other[0]} setting" if other and unknown[0] in {f.name for f in dataclasses.fields(other[1])} \
            else ""
        raise ConfigError(f"unknown key '{unknown[0]}' in {where}{hint} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any, where: str) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{p}' in '{dotted}' is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`phase1.lr=3e-4` -> ("phase1.lr", "3e-4"); the value is read as YAML (lists, bools, numbers)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        return key.strip(), strict_yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {quote(text)}: the value is not valid YAML ({one_line(getattr(e, 'problem', e))})") from None


def apply_overrides(raw: dict, overrides: list[str] = ()) -> dict:
    """A copy of a config tree with `a.b=value` overrides applied."""
    tree = _deep_copy(raw)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value, f"--set {text}")
    return tree


def _arm_of(tree: dict, source: str) -> tuple[str, str]:
    arm, budget = tree.get("arm", "method"), tree.get("budget", "matched")
    _coerce(arm, Literal[ARM_NAMES], f"{source}.arm")
    _coerce(budget, Literal[BUDGETS], f"{source}.budget")
    return arm, budget


def drop_unread(tree: dict, keep: set[str] = frozenset(), source: str = "config") -> tuple[dict, list[str]]:
    """The tree without the keys its arm does not read, and those keys; a key in `keep` (or below one)
    that the arm does not read is an error instead. A study gives each cell its base config and `set`
    this way, keeping the cell's own overrides; rote inject derives its baseline run this way."""
    arm, budget = _arm_of(tree, source)
    dropped = unread(arm, tree, budget)
    kept = [k for k in dropped if any(k == x or k.startswith(x + ".") for x in keep)]
    if kept:
        raise ConfigError(f"{source}: {kept[0]} is not read by arm {arm} ({ARMS[arm].about})")
    tree = _deep_copy(tree)
    for key in dropped:
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node[p]
        del node[leaf]
    return tree, dropped


def from_dict(raw: dict, overrides: list[str] = (), source: str = "config") -> RunConfig:
    """A checked RunConfig from a config tree and `a.b=value` overrides. A key the tree sets that its
    arm does not read is an error naming it (rote.arms)."""
    tree = apply_overrides(raw, overrides)
    if isinstance(tree.get("key"), dict) and "style" in tree["key"]:
        raise ConfigError(f"{source}: key.style is set by the arm: `arm: word_key` (a plain word) or "
                          "`arm: no_key` (no key) instead of key.style")
    arm, budget = _arm_of(tree, source)
    wrong = unread(arm, tree, budget)
    if wrong:
        raise ConfigError(f"{source}: {wrong[0]} is not read by arm {arm} ({ARMS[arm].about}); remove it")
    cfg = _build(RunConfig, tree, source)
    style = ARMS[arm].key_style or "none"
    cfg = dataclasses.replace(cfg, key=dataclasses.replace(cfg.key, style=style), out_dir=_home(cfg.out_dir),
                              data=dataclasses.replace(cfg.data, relations_file=_home(cfg.data.relations_file)),
                              phase2=dataclasses.replace(cfg.phase2, checkpoint=_home(cfg.phase2.checkpoint)))
    return check_values(cfg, source)


def _home(path: str | None) -> str | None:
    """A path setting with `~` expanded, as a shell would (a YAML file or --set=... is not read by
    one; else a folder named `~` appears in the current one): out_dir, the relations file and phase
    2's start checkpoint, each used by several modules. Model names are resolved in one place,
    rote.training.models, which expands them there."""
    return str(Path(path).expanduser()) if path and path.startswith("~") else path


def load_tree(path: str | Path) -> dict:
    """A YAML config file as nested dicts, unchecked (from_dict checks it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = read_yaml(path, ConfigError) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def load(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config file; `overrides` are `a.b=value` strings applied on top."""
    return from_dict(load_tree(path), overrides, source=str(path))


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run folder was written with (its config.yaml), read through the config classes."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE})")
    tree = load_tree(path).get("config") or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: config: expected a mapping, got {type(tree).__name__}")
    return from_dict(upgrade(tree), source=str(path))


def differences(a, b, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf where two config dicts differ (a key one lacks is None)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


# Keys runs written by earlier versions of rote carry at values that are now the only behaviour:
# dropped when such a run is read back, so it can still be resumed, evaluated and probed.
# (phase2.until is a key again, but `epochs` is its default: dropping it changes nothing, and an
# old run of an arm that does not read it still reads back.)
_RETIRED = {"phase1": {"n_prompts": 1, "facts": "split", "prompts_from": None, "checkpoint": None, "mixed": False},
            "phase2": {"until": "epochs", "threshold": 1.0, "save_epochs": [], "mixed": False, "facts": "split"},
            "eval": {"icl_examples": 0}}


def upgrade(tree: dict) -> dict:
    """A run folder's config as an earlier rote wrote it, in today's keys (see _RETIRED; key.style
    becomes the arm); a retired key at another value stays, and is refused by name."""
    tree = _deep_copy(tree)
    style = (tree.get("key") or {}).pop("style", None) if isinstance(tree.get("key"), dict) else None
    if style in ("word", "none") and "arm" not in tree:
        tree["arm"] = {"word": "word_key", "none": "no_key"}[style]
    elif style not in (None, "token"):
        tree.setdefault("key", {})["style"] = style
    for section, retired in _RETIRED.items():
        node = tree.get(section)
        if isinstance(node, dict):
            for key, old in retired.items():
                if key in node and node[key] == old:
                    del node[key]
    return tree


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON output. Of a RunConfig: the keys its arm
    reads (key.style, set by the arm, left out), so the dict loads back as the same config."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    tree = plain(cfg)
    if isinstance(cfg, RunConfig):
        del tree["key"]["style"]
        tree, _ = drop_unread(tree)
    return tree


def replace(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """A new config with dotted overrides applied (validated like a file)."""
    return from_dict(to_dict(cfg), overrides, source="config")


def with_arm(cfg: RunConfig, arm: str, overrides: list[str] = ()) -> RunConfig:
    """`cfg` as a run of another arm: the settings the new arm does not read are dropped, then
    `overrides` are applied (one the arm does not read is an error)."""
    tree = apply_overrides(to_dict(cfg) | {"arm": arm}, overrides)
    tree, _ = drop_unread(tree, keep={parse_override(o)[0] for o in overrides}, source=f"arm {arm}")
    return from_dict(tree, source=f"arm {arm}")


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree
