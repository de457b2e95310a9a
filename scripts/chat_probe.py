"""python scripts/chat_probe.py [--config configs/demo.yaml] [--budget 48] [--stage CHECKPOINT] [--precision fp32]
   python scripts/chat_probe.py --records RUN/eval/phase2/predictions.jsonl [--model FOLDER]

How a model answers the run's natural prompts raw and under its chat template (statements as the
assistant's continuation or as a user turn): empty answers, prefix and first-named accuracy by
prompt form, the any-object control, and at which new token a chat answer names its first known
object (what rote.evaluation.scoring.CHAT_EXTRA_TOKENS is set from). Every fact of the config, no
training: a checkpoint folder (`--stage`) asks a trained model. With `--records`, reads a run's records
instead: per rendering rule, at which new token the first known object's name ends in its answers, and
how many answers ran to the budget without ending.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses

from rote.arms import eval_config
from rote.config import load
from rote.data import chat
from rote.evaluation.matching import first_named, normalize
from rote.evaluation.queries import build_queries
from rote.evaluation.scoring import companions_of, evaluate
from rote.runner import plan_data
from rote.data.factset import relations_of
from rote.training import models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--stage", default=None, help="a checkpoint folder (default: the config's base model)")
    ap.add_argument("--budget", type=int, default=48, help="new tokens per chat answer, to see where objects come")
    ap.add_argument("--prompt-sets", default="train,test,unrelated,languages")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                    help="eval.precision (fp32 is the faster one on a CPU without bf16 instructions: AVX2)")
    ap.add_argument("--records", help="a run's predictions.jsonl: where its chat answers name their first object")
    ap.add_argument("--model", default="smollm2-135m", help="with --records: the tokenizer to count tokens with")
    args = ap.parse_args()
    if args.records:
        return budget_from_records(args.records, args.model)
    cfg = load(args.config)
    facts = plan_data(cfg)
    relations = relations_of(cfg)
    from rote.data.templates import key_tokens
    model, tokenizer, _ = models.load_stage(args.stage or cfg.model.name, "float32",
                                            None if args.stage else key_tokens(relations.values(), cfg.key), "mean", 0)
    ecfg = dataclasses.replace(eval_config(cfg), prompt_sets=tuple(args.prompt_sets.split(",")),
                               multiple_choice=False, precision=args.precision)
    companions = companions_of(facts)
    settings = {"raw": None, **{f"chat, statements: {s}": chat.frame_of(tokenizer, s) for s in chat.STATEMENTS}}
    for label, frame in settings.items():
        queries = build_queries(facts, relations, cfg.key, ecfg, cfg.phase2.n_prompts, chat=frame)
        run_cfg = dataclasses.replace(ecfg, max_new_tokens=args.budget if frame else None)
        import time
        started = time.perf_counter()
        records = evaluate(model, tokenizer, queries, run_cfg, companions, progress=False, chat=frame)
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"\n== {label} ({len(records)} answers)", flush=True)
        by = collections.defaultdict(list)
        for r in records:
            by[(r["prompt_set"], r["prompt_form"])].append(r)
        rule = "hit_first" if frame else "hit_prefix"
        print(f"{'prompt set':<12}{'form':<10}{'n':>5}{'empty':>7}{'prefix':>8}{'first':>7}{'any obj':>8}")
        for (ps, form), recs in sorted(by.items()):
            m = lambda key: sum(bool(r.get(key)) for r in recs) / len(recs)
            print(f"{ps:<12}{form:<10}{len(recs):>5}{m('empty'):>7.2f}{m('hit_prefix'):>8.2f}"
                  f"{m(rule):>7.2f}{m('any_object_hit'):>8.2f}")
        if frame:
            # where the first known object starts, in new tokens
            at = []
            for q, r in zip(queries, records):
                known = [*q.options, *companions[q.fact.subject_id].values()]
                name = first_named(r["generation"], known)
                if name is None:
                    continue
                text = normalize(r["generation"])
                cut = r["generation"][: len(text.split(normalize(name))[0]) + len(name)]
                at.append(len(tokenizer(cut, add_special_tokens=False)["input_ids"]))
            at.sort()
            if at:
                q = lambda p: at[min(len(at) - 1, int(p * len(at)))]
                print(f"first known object ends at new token: median {q(0.5)}, 90% {q(0.9)}, 95% {q(0.95)}, "
                      f"max {at[-1]} ({len(at)} of {len(records)} answers name one)")
            for r in records[:: max(1, len(records) // 6)][:6]:
                print(f"  {r['prompt_form']:<9} {r['prompt'][-60:]!r} -> {r['generation'][:120]!r}")


def budget_from_records(path: str, model: str) -> None:
    import json
    from pathlib import Path
    tokenizer = models.load_tokenizer(str(models.resolve(model)))
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    chat_records = [r for r in records if r.get("rule") == "first_named"]
    at, lengths = [], []
    for r in chat_records:
        text = r["generation"]
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        if r.get("hit_first") or r.get("any_object_hit"):
            start = normalize(text).find(normalize(r["gold"]))
            if start >= 0:
                at.append(len(tokenizer(text[: start + len(r["gold"])], add_special_tokens=False)["input_ids"]))
    at.sort()
    lengths.sort()
    q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None
    print(f"{path}: {len(chat_records)} chat answers; answer length in tokens median {q(lengths, 0.5)}, 90% "
          f"{q(lengths, 0.9)}, max {lengths[-1] if lengths else None}")
    print(f"the gold's name ends at new token: median {q(at, 0.5)}, 90% {q(at, 0.9)}, 99% {q(at, 0.99)}, "
          f"max {at[-1] if at else None} ({len(at)} answers name it)")


if __name__ == "__main__":
    main()
