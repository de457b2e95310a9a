"""`rote run`: the stages of one run, each writing into the run directory and marked done.

    data -> eval/base -> phase1 -> eval/phase1 -> phase2 -> eval/phase2 -> report

Each phase trains what the run's arm says (rote.arms, rote.train_stage); a phase the arm does not
train is skipped (its checkpoint is the incoming model). Evaluation stages are rote.eval_stage;
studies, rote.study_runs.
Files are written under a temporary name and renamed; a stage's `.done` marker is written last,
so a killed run never leaves a half-written stage that looks complete, and running the same
command again resumes after the last finished stage. Summaries hold only what a stage computed
(a resumed run writes the same bytes); wall-clock seconds go to each stage's timing.json. Inputs
are checked before anything is written, and one process at a time writes a run folder (rote.lock).

Launched as several processes (`accelerate launch ... -m rote.cli run`), every process goes through
the same stages: the main process holds the lock and writes every file, all of them train (the
loop's data-parallel or sharded path) and share out the evaluations' batches, and each stage ends
with the others waiting for the main process (rote.training.processes).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rote import config as config_mod
import rote
from rote import eval_stage, train_stage
from rote.preflight import chat_frame, check_inputs
from rote.arms import ARMS
from rote.config import RunConfig, read_run_config
from rote.config_checks import value_at
from rote.data.facts import Fact, read_facts, write_facts
from rote.data.factset import plan_facts, relations_of, resplit
from rote.data.relation_files import resolve_relations
from rote.data.templates import key_tokens
from rote.errors import ConfigError, RunError, read_utf8
from rote.fileio import cache_dir, is_done, mark_done, write_json, write_text
from rote.lock import LOCK_FILE, check_folder, hold
from rote.names import (CHECKPOINT_DIR, CONFIG_FILE, DONE_FILE, FACTS_FILE, KEY_TOKENS_FILE,
                        RUN_STAGES, SPLITS, SPLITS_FILE, TIMING_FILE,
                        planned_stages)
from rote.training import processes


# ---------------------------------------------------------------- the run folder's config


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


RESUME_REMEDY = "use another name (--set name=...) or delete the folder"  # rote inject words its own


def check_run_folder(run_dir: Path) -> None:
    """Refuse (RunError) a run folder that rote did not start: a folder of that name holding other
    files, or a config.yaml without rote's `config:` block. A run writes config.yaml, facts.jsonl
    and others by name, so it would overwrite the user's files of those names."""
    if not run_dir.is_dir():
        return
    path = run_dir / CONFIG_FILE
    if path.is_file():
        try:
            tree = yaml.safe_load(read_utf8(path, RunError))
        except yaml.YAMLError:
            tree = None
        ours = isinstance(tree, dict) and isinstance(tree.get("config"), dict)
        if not ours:
            raise RunError(f"{run_dir} holds a {CONFIG_FILE} that is not a rote run's (no config: block); choose "
                           f"another name (--set name=...) or out_dir")
        return
    # Not yet started: at most the lock and, for rote inject, its record (written just before the run
    # starts), and the temporary file of a config.yaml whose writer was killed (fileio.write_text).
    others = sorted(p.name for p in run_dir.iterdir()
                    if p.name not in (LOCK_FILE, "inject.json") and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if others:
        raise RunError(f"{run_dir} holds files that no rote run wrote ({', '.join(others[:5])}"
                       f"{', ...' if len(others) > 5 else ''}); choose another name (--set name=...) or out_dir")


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    """The resolved config goes first; resuming with a different config is refused, since
    the finished stages would silently mix two settings."""
    path = run_dir / CONFIG_FILE
    resolved = config_mod.to_dict(cfg)
    if path.is_file():
        # Read back through the config classes: a key added to rote since (with its default)
        # is not a difference.
        try:
            before = config_mod.to_dict(read_run_config(run_dir))
        except config_mod.ConfigError:  # written by an older rote, before a check that refuses it now
            before = {}
        if before != resolved and not any(run_dir.glob(f"**/{DONE_FILE}")):
            # Nothing was finished with the old config (a start that failed): the fixed command reuses the folder.
            print(f"[rote] note: {run_dir} had no finished stage; its config is replaced", file=sys.stderr)
        elif before != resolved:
            diff = config_mod.differences(before, resolved)
            raise RunError(f"{run_dir} was started with another config ({'; '.join(diff[:5])}); {RESUME_REMEDY}")
        else:
            check_inputs_unchanged(cfg, run_dir)
            return
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"rote_version": rote.__version__, "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "inputs": input_digests(cfg)}
    write_text(path, yaml.safe_dump({"config": resolved, "meta": meta}, sort_keys=False, allow_unicode=True))


def check_inputs_unchanged(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse (RunError) to add to a run folder when a path it reads (input_digests) holds other
    content than when the run started: its finished stages read the old content. A run written
    before these digests were stored, or an input that is gone, is not compared."""
    stored = stored_inputs(run_dir)
    now = input_digests(cfg)
    changed = [k for k in stored if k in now and stored[k] != now[k]]
    if changed:
        raise RunError(f"{run_dir}: {', '.join(f'{k} ({value_at(cfg, k)})' for k in changed)} changed since "
                       f"the run started, so its finished stages read the old content; {RESUME_REMEDY}")


def stored_inputs(run_dir: Path) -> dict[str, str]:
    """The input digests a run stored in its config.yaml when it started (input_digests); {} for a
    run written before they were stored."""
    tree = yaml.safe_load(read_utf8(run_dir / CONFIG_FILE, RunError)) or {}
    return (tree.get("meta") or {}).get("inputs") or {}


def input_digests(cfg: RunConfig) -> dict[str, str]:
    """What a run reads by path, by content: the relations file, and the model and phase-2 start
    folders when they are local folders (a hub id or a bundled model is known by its name). A
    resumed run whose inputs changed in place is refused (write_config)."""
    from rote.evaluation import reuse
    memo = cache_dir() if reuse.enabled() else None  # ROTE_EVAL_CACHE=0: store nothing, read every time
    out = {}
    if cfg.data.relations_file and Path(cfg.data.relations_file).is_file():
        out["data.relations_file"] = reuse.file_digest(Path(cfg.data.relations_file), memo)
    for key in ("model.name", "phase2.checkpoint"):
        folder = value_at(cfg, key)
        if folder and Path(folder).expanduser().is_dir():
            out[key] = reuse.json_digest(reuse.model_digest(Path(folder).expanduser(), memo))
    return out


# ---------------------------------------------------------------- stages


def write_data(facts: list[Fact], run_dir: Path) -> None:
    """The data stage's files: the facts and their split."""
    write_facts(facts, run_dir / FACTS_FILE)
    write_json(run_dir / SPLITS_FILE, {s: [f.id for f in facts if f.split == s] for s in SPLITS})


def plan_data(cfg: RunConfig) -> list[Fact]:
    """Facts and splits, in memory (rote.data.factset). When phase 2 starts from another run's
    checkpoint, that run's facts are used, split by this run's k (rote.data.factset.resplit)."""
    if not cfg.phase2.checkpoint:
        return plan_facts(cfg)
    source = Path(cfg.phase2.checkpoint).resolve().parent.parent
    if not (source / FACTS_FILE).is_file() or not (source / CONFIG_FILE).is_file():
        raise RunError(f"phase2.checkpoint {cfg.phase2.checkpoint} is not inside a run directory with "
                       f"{FACTS_FILE} and {CONFIG_FILE}")
    # This run trains and asks the source run's facts, so its data settings must be the ones they were
    # made with: a relation the source has no facts of fails mid-run (its facts name relations this run
    # does not load), and a larger k than the source's facts per relation leaves none held out.
    # Only k may differ: it just re-splits the same facts.
    # A relations file is compared by content (the digest the source run stored), not by how its
    # path is written: the same file named relatively there and absolutely here is the same input.
    source_data = read_run_config(source).data
    theirs = config_mod.to_dict(dataclasses.replace(source_data, phase2_facts=0, relations_file=None))
    ours = config_mod.to_dict(dataclasses.replace(cfg.data, phase2_facts=0, relations_file=None))
    diff = config_mod.differences(theirs, ours, "data.")
    theirs_file = source_data.relations_file
    if bool(theirs_file) != bool(cfg.data.relations_file):
        diff.append(f"data.relations_file: {theirs_file!r} -> {cfg.data.relations_file!r}")
    elif theirs_file and not _same_relations_file(source, theirs_file, cfg.data.relations_file):
        diff.append(f"data.relations_file: {cfg.data.relations_file} holds other content than the file that run read")
    if diff:
        raise ConfigError(f"phase2.checkpoint={cfg.phase2.checkpoint} comes from {source}, whose facts were made "
                          f"with other data settings (that run -> this config: {'; '.join(diff)}); "
                          "phase 2 re-splits that run's facts, so set data.* as that run did (only "
                          "data.phase2_facts may differ)")
    return resplit(read_facts(source / FACTS_FILE), cfg.data.phase2_facts)


def _same_relations_file(source: Path, theirs: str, ours: str) -> bool:
    """Whether the relations file `ours` holds what the source run read from `theirs` (the digest it
    stored); a run from before digests were stored is compared by resolved path."""
    from rote.evaluation import reuse
    stored = stored_inputs(source)
    if "data.relations_file" in stored and Path(ours).is_file():
        return reuse.file_digest(Path(ours), None) == stored["data.relations_file"]
    return Path(theirs).resolve() == Path(ours).resolve()


def data_stage(cfg: RunConfig) -> list[Fact]:
    """The data stage alone (`rote data`): the config, the facts and their split, written into the run
    folder under its lock and marked done, so that `rote run` resumes after it. Needs no model."""
    run_dir = cfg.run_dir
    planned = None if is_done(run_dir, "data") else plan_data(cfg)
    with hold(run_dir):
        write_config(cfg, run_dir)
        if is_done(run_dir, "data"):
            return read_facts(run_dir / FACTS_FILE)
        write_data(planned, run_dir)
        mark_done(run_dir, "data", {"facts": len(planned)})
        return planned


class Session:
    """What the model stages share in one process: the relations, the facts, and a model
    loaded lazily from the newest finished checkpoint."""

    def __init__(self, cfg: RunConfig, run_dir: Path, facts: list[Fact]):
        self.cfg, self.run_dir, self.facts = cfg, run_dir, facts
        self.relations = relations_of(cfg)
        # Re-purposing: the relation whose prompts phase 2 trains instead of each fact's own
        # (phase2.prompts_from), and the one whose test prompts the `repurposed` prompt set asks.
        self.prompts_from = self.relation(cfg, cfg.phase2.prompts_from)
        self.repurposed = self.relation(cfg, cfg.eval.repurposed_prompts or cfg.phase2.prompts_from)
        self.model = self.tokenizer = None
        self.chat = None  # the chat rendering of the loaded tokenizer (chat_frame), None for raw text
        self.key_record: dict = {}
        self.loaded_from: str | None = None

    def asked_relations(self) -> list:
        """Every relation whose prompts the run trains or asks: its own, phase2.prompts_from's and the
        repurposed set's (contrast questions leave all of them alone)."""
        return list(self.relations.values()) + [r for r in (self.prompts_from, self.repurposed) if r is not None]

    @staticmethod
    def relation(cfg: RunConfig, name: str | None):
        """The relation `name` (a user relation of data.relations_file, or a built-in one), or None."""
        return resolve_relations((name,), cfg.data.relations_file)[0] if name else None

    def load(self, source: str, add_keys: bool) -> None:
        from rote.training import models  # torch-heavy: imported only when a stage needs the model
        if self.loaded_from == source:
            return
        tokens = key_tokens(self.relations.values(), self.cfg.key) if add_keys else None
        self.model, self.tokenizer, self.key_record = models.load_stage(source, self.cfg.model.dtype, tokens,
                                                                        self.cfg.key.init, self.cfg.seed)
        self.chat = chat_frame(self.cfg, self.tokenizer)  # a checkpoint keeps its base model's template
        if add_keys and processes.is_main():
            write_json(self.run_dir / KEY_TOKENS_FILE, self.key_record)
        processes.to_device(self.model)  # a GPU, or several processes each on its own device
        self.model.eval()
        self.loaded_from = source

    def model_for(self, stage: str) -> None:
        """Load the weights a stage starts from: base model (+ key tokens), or a checkpoint."""
        if stage in ("eval/base", "phase1"):
            self.load(self.cfg.model.name, add_keys=True)
        elif stage in ("eval/phase1", "phase2"):
            self.load(self.cfg.phase2.checkpoint or str(self.run_dir / "phase1" / CHECKPOINT_DIR), add_keys=False)
        else:
            self.load(str(self.run_dir / "phase2" / CHECKPOINT_DIR), add_keys=False)

    def save(self, path: Path) -> None:
        from rote.training.checkpoint import save_checkpoint
        save_checkpoint(self.model, self.tokenizer, self.key_record, path)


def _stages(cfg: RunConfig, stop_after: str | None) -> tuple[str, ...]:
    """The stages this run goes through (rote.names.planned_stages), up to `stop_after`."""
    last = RUN_STAGES.index(stop_after) if stop_after else len(RUN_STAGES)
    return tuple(s for s in planned_stages(cfg.eval.stages, bool(cfg.phase2.checkpoint)) if RUN_STAGES.index(s) <= last)


def run(cfg: RunConfig, stop_after: str | None = None, quiet: bool = False) -> Path:
    """Run (or resume) every stage of `cfg`; returns the run directory.

    The config, the facts (built in memory), the model and the texts' lengths are checked before
    anything is written, so a failed start leaves no folder behind. The folder is then locked
    (rote.lock): a second writer stops at once with a LockedError. Launched as several processes,
    every process calls this; the main process checks, holds the lock and writes (module docstring)."""
    processes.start()
    run_dir = cfg.run_dir
    check_folder(run_dir)  # before the checks below, which may convert a model first
    stages = _stages(cfg, stop_after)
    arm = ARMS[cfg.arm]
    if cfg.data.phase2_facts == 0 and (("phase2" in stages and arm.phase2 == "natural_k") or
                                       ("phase1" in stages and arm.phase1 == "natural_k") or arm.in_context):
        raise ConfigError(f"arm {cfg.arm} trains or shows the k phase-2 facts: data.phase2_facts must be >= 1")

    def prepare() -> list[Fact] | None:  # the main process's: it may convert a bundled model into the cache
        check_run_folder(run_dir)
        planned = None if is_done(run_dir, "data") else plan_data(cfg)
        check_inputs(cfg, planned or read_facts(run_dir / FACTS_FILE))
        return planned

    planned = processes.on_main(prepare)
    with processes.main_holds(run_dir):
        return _run_locked(cfg, run_dir, planned, stop_after, quiet)


def _run_locked(cfg: RunConfig, run_dir: Path, planned: list[Fact] | None, stop_after: str | None, quiet: bool) -> Path:
    say = (lambda *a: None) if quiet or not processes.is_main() else (lambda *a: print(*a, flush=True))

    def data() -> tuple[list[Fact], list[str]]:  # the data stage, and the stages left to run
        write_config(cfg, run_dir)
        if is_done(run_dir, "data"):  # (also when another process finished it while this one was checking)
            facts = read_facts(run_dir / FACTS_FILE)
        else:
            facts = planned or plan_data(cfg)
            write_data(facts, run_dir)
            mark_done(run_dir, "data", {"facts": len(facts)})
        return facts, [s for s in _stages(cfg, stop_after)[1:] if not is_done(run_dir, s)]

    facts, stages = processes.on_main(data)  # the other processes get the facts the main process wrote
    say(f"[rote] {run_dir}: {len(facts)} facts, {sum(f.split == 'phase2' for f in facts)} for phase 2")
    session = Session(cfg, run_dir, facts)
    for stage in stages:
        started = time.perf_counter()
        if stage == "report":
            from rote.report.run import build_report
            processes.on_main(lambda: build_report(run_dir) and None)
            info = {}
        elif stage == "phase2" and ARMS[cfg.arm].phase2 is None:
            source = cfg.phase2.checkpoint or str(run_dir / "phase1" / CHECKPOINT_DIR)
            info = processes.on_main(lambda: train_stage.skip_phase(run_dir, "phase2", source))
        else:
            session.model_for(stage)
            info = (train_stage.run_training(session, stage) if stage.startswith("phase")
                    else eval_stage.run_eval(session, stage))
        processes.on_main(lambda: _finish(run_dir, stage, info, started))  # no process goes on before it
        say(f"[rote] {stage} done in {time.perf_counter() - started:.0f} s {json.dumps(info)[:200]}")
    return run_dir


def _finish(run_dir: Path, stage: str, info: dict, started: float) -> None:
    """A stage's timing.json and its `.done` marker, written last."""
    # beside an eval stage's total: the damage measures' share, or the cache entry it copied (not in
    # its summary: a run that reused writes the same bytes as one that measured)
    beside = {k: v for k, v in info.items() if k in ("damage_seconds", "reused_from")}
    write_json(run_dir / stage / TIMING_FILE, {"seconds": round(time.perf_counter() - started, 2), **beside})
    mark_done(run_dir, stage)
