"""Command line: each subcommand parses its arguments, builds a config, calls one library function.

    rote run configs/demo.yaml [--set phase1.epochs=10 ...]
    rote data configs/demo.yaml [--out facts.jsonl]
    rote models [list | prepare NAME]
    rote eval RUN [--checkpoint DIR] [--stage NAME]
    rote report RUN
    rote inject FACTS.jsonl --model NAME --out DIR [--relations RELATIONS.yaml]
    rote probe RUN [--layers 0,5,10] [--max-facts N]
    rote study configs/studies/NAME.yaml [--set ...] [--seeds 0,1,2] [--dry-run] [--out studies]  |  rote study --list

`run`, `eval` and `study` also run as several processes (`accelerate launch ... -m rote.cli run
CONFIG`: rote.training.processes); the other commands refuse to.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rote.errors import ConfigError, RoteError, one_line, quote


def _config(args):
    from rote import config
    return config.load(args.config, args.set or [])


def cmd_run(args) -> int:
    from rote.report.headline import format_headline
    from rote.runner import run
    from rote.training import processes
    run_dir = run(_config(args), stop_after=args.stop_after)
    if not processes.is_main():
        return 0
    print(format_headline(run_dir))
    report = run_dir / "report" / "report.html"
    print(f"\nrun directory: {run_dir}" + (f"\nreport:        {report}" if report.is_file() else ""))
    return 0


def cmd_data(args) -> int:
    """The run's data stage (rote.runner.data_stage), or the same facts into one --out file."""
    from collections import Counter
    from rote import runner
    from rote.data.facts import write_facts
    from rote.errors import RunError
    from rote.lock import check_folder
    from rote.names import FACTS_FILE
    cfg = _config(args)
    if args.out:
        out = Path(args.out)
        if out.is_dir():  # write_facts's rename would fail on it with IsADirectoryError
            raise RunError(f"--out {out} is a folder; name the file to write, e.g. {out / FACTS_FILE}")
        check_folder(out.parent, "--out's folder")
        facts = runner.plan_data(cfg)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_facts(facts, out)
    else:  # the data stage of the run folder, under its lock: `rote run` resumes after it
        out = cfg.run_dir / "facts.jsonl"
        facts = runner.data_stage(cfg)
    counts = Counter((f.relation, f.split) for f in facts)
    print(f"wrote {len(facts)} facts ({cfg.data.subjects} subjects) to {out}")
    for rel in dict.fromkeys(f.relation for f in facts):
        print(f"  {rel:22s} phase2 {counts[(rel, 'phase2')]:4d}  heldout {counts[(rel, 'heldout')]:4d}")
    for f in facts[:3]:
        print(f"  e.g. {f.subject} --{f.relation}--> {f.object}")
    return 0


def cmd_models(args) -> int:
    from rote.training import models
    if args.action == "prepare":
        if not args.name:
            raise ConfigError("rote models prepare NAME: name a bundled model (see `rote models list`)")
        print(models.prepare(args.name, force=args.force))
        return 0
    for m in models.list_models():
        print(f"{m['name']:16s} {'prepared at ' + str(m['path']) if m.get('path') else 'not prepared'}  {m.get('description', '')}")
    print("Any Hugging Face model id or local folder works too (hub ids need internet).")
    return 0


def cmd_eval(args) -> int:
    import shutil
    from rote.config import read_run_config
    from rote.errors import RunError
    from rote.names import EVAL_STAGES
    from rote.config_checks import plain_name
    from rote.data.facts import read_facts
    from rote.report.headline import format_headline
    from rote.eval_stage import run_eval
    from rote.runner import Session, check_inputs_unchanged
    from rote.training import processes
    run_dir = Path(args.run)
    name = plain_name(args.stage, "--stage")  # a folder under RUN/eval, never outside it
    if name in EVAL_STAGES:  # the headline, the report and every damage measure read these as the run wrote them
        raise ConfigError(f"--stage {name}: eval/{name} is the run's own stage, written by rote run; name this "
                          f"evaluation otherwise (e.g. --stage {name}-again)")
    stage = f"eval/{name}"
    cfg = read_run_config(run_dir)
    check_inputs_unchanged(cfg, run_dir)  # its new stage must ask what the finished ones asked
    processes.start()
    with processes.main_holds(run_dir):
        if (run_dir / stage).exists() and not args.overwrite:
            raise RunError(f"{run_dir / stage} holds an earlier evaluation; pass --overwrite to replace it, or "
                           f"choose another --stage")
        session = Session(cfg, run_dir, read_facts(run_dir / "facts.jsonl"))
        checkpoint = args.checkpoint or str(run_dir / "phase2" / "checkpoint")
        session.load(checkpoint, add_keys=False)
        if args.overwrite:  # only now: a checkpoint that does not load leaves the earlier evaluation in place
            processes.on_main(lambda: shutil.rmtree(run_dir / stage, ignore_errors=True))
        info = run_eval(session, stage)
    if not processes.is_main():
        return 0
    print(f"{stage}: {info['records']} records in {info['seconds']} s -> {run_dir / stage}")
    print(format_headline(run_dir))
    return 0


def cmd_report(args) -> int:
    from rote.report.headline import format_headline
    from rote.report.run import build_report
    path = build_report(Path(args.run))
    print(format_headline(Path(args.run)))
    print(f"\nreport: {path}")
    return 0


def cmd_probe(args) -> int:
    from rote.probe.hidden import ProbeError, probe_run
    from rote.report.probe import format_summary, write_figures
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise ProbeError(f"--layers {quote(args.layers)} is not a comma-separated list of integers") from None
    geometry = probe_run(Path(args.run), layers=layers, max_facts=args.max_facts, quiet=False,
                         headline_layer=args.headline_layer)
    write_figures(Path(args.run))
    print(format_summary(geometry))
    print(f"\ngeometry: {Path(args.run) / 'probe' / 'geometry.json'}\nfigures:  {Path(args.run) / 'probe' / 'figures'}")
    return 0


def cmd_inject(args) -> int:
    from rote.injection import PAPER_RECIPE, inject
    chat = [f"model.chat_template={args.chat_template}"] if args.chat_template else []
    overrides = [*chat, *(PAPER_RECIPE if args.paper_recipe else ()), *(args.set or [])]
    result = inject(args.facts, model=args.model, relations=args.relations, out=args.out, overrides=overrides,
                    conflicts=args.conflicts, phase2_fraction=args.phase2_fraction, baseline=not args.no_baseline,
                    overwrite=args.overwrite)
    print()
    print((Path(result["out"]) / "card.md").read_text(encoding="utf-8"))
    print(f"model folder: {result['out']}\ncard:         {Path(result['out']) / 'card.md'}")
    return 0


def cmd_study(args) -> int:
    from rote.study.plan import describe, expand
    from rote.study.spec import list_studies, load_study
    if args.list:
        folder = Path(args.study) if args.study else Path("configs/studies")
        if not folder.is_dir() and not args.study:  # outside the checkout: the one this package came from
            folder = Path(__file__).resolve().parents[2] / "configs" / "studies"
        found = list_studies(folder)
        if not found:
            print(f"no study files in {folder}", file=sys.stderr)
            return 2
        width = max(len(name) for name, _, _ in found)
        for name, question, path in found:
            print(f"{name:{width}s}  {question}  ({path})")
        return 0
    if not args.study:
        raise ConfigError("rote study STUDY.yaml: name a study file (see `rote study --list`)")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {quote(args.seeds)} is not a comma-separated list of integers") from None
    if args.dry_run:
        print(describe(expand(load_study(args.study, seeds, args.set or []), args.out)))
        return 0
    from rote.report.study import format_summary, read_summary
    from rote.study_runs import run_study
    from rote.training import processes
    study_dir = run_study(args.study, out=args.out, seeds=seeds, overrides=args.set or [],
                                train=not args.report_only, keep_checkpoints=args.keep_checkpoints, jobs=args.jobs)
    if not processes.is_main():
        return 0
    print(format_summary(read_summary(study_dir)))
    print(f"\nsummary: {study_dir / 'summary.csv'}  {study_dir / 'summary.json'}\nreport:  {study_dir / 'report.html'}")
    return 0


# The commands that run as several processes (rote.training.processes); the others write files or
# print from every process alike, so they refuse a launcher's processes.
SEVERAL_PROCESSES = ("run", "eval", "study")


def _check_processes(args) -> None:
    from rote.training.processes import launched
    if launched() > 1 and args.command not in SEVERAL_PROCESSES:
        raise ConfigError(f"rote {args.command} runs as one process, but it was launched as {launched()} "
                          f"(WORLD_SIZE={launched()}); run it without accelerate launch or torchrun (only rote "
                          f"{', '.join(SEVERAL_PROCESSES)} run as several)")


def _who(command: str) -> str:
    """`rote COMMAND`, and which process says so when launched as several."""
    from rote.training.processes import launched
    return f"rote {command}" + (f" (process {os.environ.get('RANK', '?')} of {launched()})" if launched() > 1 else "")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag (docs/cli.md is generated from it: scripts/reference_docs.py)."""
    parser = argparse.ArgumentParser(prog="rote", description="Memorize-then-generalize: teach a language model new facts.",
                                     epilog="exit codes: 0 done, 1 a bug (traceback), 2 bad config, arguments or input, "
                                            "3 a folder that cannot be used as asked, 4 model missing or unreachable, "
                                            "5 folder in use by another rote process, 130 interrupted")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an expected error too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run (or resume) every stage of a config: data, phase 1, phase 2, evaluation, report")
    p.add_argument("config", help="a run config (YAML, e.g. configs/demo.yaml; keys: docs/config.md)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. phase1.epochs=10")
    p.add_argument("--stop-after", choices=["data", "eval/base", "phase1", "eval/phase1", "phase2", "eval/phase2"],
                   help="stop after this stage (a later `rote run` resumes)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="run only the data stage: the fact set (fictional subjects, real objects, options, splits)")
    p.add_argument("config", help="a run config (YAML)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--out", help="write only the facts, to this JSONL file (default: the run folder's data stage)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the bundled models, or prepare one (convert once, cache)")
    p.add_argument("action", nargs="?", choices=["list", "prepare"], default="list")
    p.add_argument("name", nargs="?", help="prepare: the bundled model to convert (see `rote models list`)")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a run's facts")
    p.add_argument("run", help="a run folder")
    p.add_argument("--checkpoint", help="model folder (default: RUN/phase2/checkpoint)")
    p.add_argument("--stage", default="custom", help="name of the eval folder to write (eval/NAME; not base, "
                                                     "phase1 or phase2, which the run writes)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation of the same --stage")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="rebuild a run's report from its files (no model, no torch)")
    p.add_argument("run", help="a run folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("probe", help="hidden-state geometry of every stage model: relation separation, alignment, PCA")
    p.add_argument("run", help="a run folder")
    p.add_argument("--layers", help="comma-separated layer indices (0 = embeddings, negative from the end); default all")
    p.add_argument("--max-facts", type=int, metavar="N", help="at most N facts per relation (default: all)")
    p.add_argument("--headline-layer", type=int, metavar="L",
                   help="the layer of the printed summary and PCA (default: highest phase-2 separation)")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("inject", help="teach a model your own facts (memorize, generalize, evaluate) and export it with a card")
    p.add_argument("facts", help="JSONL or CSV rows: subject, relation, object (optional: id, conflict)")
    p.add_argument("--model", default="smollm2-135m", help="bundled name, local folder or hub id (default: smollm2-135m)")
    p.add_argument("--out", required=True, help="output folder: the model, card.md, card.json and run/")
    p.add_argument("--relations", help="YAML file with your own relations (the built-in relation format)")
    p.add_argument("--conflicts", help="facts that contradict what the model knows (same format), reported apart")
    p.add_argument("--phase2-fraction", type=float, default=0.1, metavar="F",
                   help="share of each relation's facts trained with natural prompts in phase 2 (default 0.1, at least 1)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain fine-tuning baseline (half the cost)")
    p.add_argument("--paper-recipe", action="store_true",
                   help="the paper's method without the levers against damage (rote.injection.PAPER_RECIPE; --set after it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier injection (or write into a non-empty folder)")
    p.add_argument("--chat-template", choices=("auto", "on", "off"),
                   help="train and ask natural prompts under the model's chat template (default auto: when it has one)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. phase1.lr=3e-4")
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("study", help="run one of the paper's experiments: a grid of configs x seeds, phase 1 shared, "
                                     "mean ± std, figures and a report")
    p.add_argument("study", nargs="?", help="study file (configs/studies/NAME.yaml); with --list, a folder of them")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value in every cell")
    p.add_argument("--seeds", help="comma-separated seeds, replacing the study's (default 0,1,2)")
    p.add_argument("--dry-run", action="store_true", help="print the cells, runs, phase-1 trainings and rough counts; run nothing")
    p.add_argument("--out", default="studies", help="parent folder of the study's folder (default: studies)")
    p.add_argument("--list", action="store_true", help="list the study files (default folder: configs/studies) and their questions")
    p.add_argument("--report-only", action="store_true", help="summarize the finished runs and rebuild the report; train nothing")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every cell's phase-2 checkpoint (default: deleted once the cell is evaluated)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in a process of its own with a share of the CPU cores or one GPU "
                        "(default 1; a cell waits for its shared phase-1 run)")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Expected failures (rote.errors: the classes and their exit codes) are one line on stderr;
    # anything else is a bug and keeps its traceback. --debug shows the traceback of both.
    try:
        _check_processes(args)
        return args.func(args)
    except RoteError as e:
        if args.debug:
            raise
        print(f"{_who(args.command)}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:  # a path given on the command line that is not there
        if args.debug:
            raise
        print(f"{_who(args.command)}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{_who(args.command)}: interrupted; the same command resumes after the last finished stage", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
