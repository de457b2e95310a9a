"""Multiple-choice scoring at the demo's settings: rote's scoring vs the previous implementation,
side by side in one run on the bundled model.

    .venv/bin/python bench/bench_eval.py [--facts 20] [--reps 2]

The demo's multiple-choice queries (configs/demo.yaml: key, train and 3 test prompts per fact,
10 options each; `--facts` people per relation, the demo has 60) are scored by
1. the previous implementation (kept here only, as the reference): prompts of one token length
   run once, then every option of every prompt in one batch, right-padded to the longest option;
2. rote's `option_logprobs`: the same prompt pass, then options of two or more tokens only, in
   batches of one option length (no padding).
Prints prompts/s of each (best of `--reps`, alternating, so that load from other processes hits
both alike), the ratio, and the largest per-option log-probability difference in fp32 and bf16.
Run it alone: another busy process on a 2-core machine distorts every number.
"""
from __future__ import annotations

import argparse
import time

import torch

from rote import config
from rote.arms import eval_config
from rote.evaluation.queries import build_queries
from rote.evaluation.scoring import _autocast, _cache_argument, inference_model, option_logprobs
from rote.runner import Session, plan_data
from rote.training.encode import encode


@torch.no_grad()
def reference_logprobs(model, tokenizer, prompt_targets, precision: str, rows_per_batch: int = 512):
    """The previous `option_logprobs`: [(summed log-prob, n_tokens) per option] per prompt."""
    device = next(model.parameters()).device
    encoded = [[encode(tokenizer, p, t, mask="object") for t in targets] for p, targets in prompt_targets]
    result = [None] * len(encoded)
    for length in sorted({g[0].target_start for g in encoded}):
        batch: list[int] = []
        for i in [i for i, g in enumerate(encoded) if g[0].target_start == length] + [None]:
            if i is None or (batch and sum(len(encoded[k]) for k in batch) + len(encoded[i]) > rows_per_batch):
                for k, scores in zip(batch, _reference_batch(model, [encoded[k] for k in batch], device, precision)):
                    result[k] = scores
                batch = []
            if i is not None:
                batch.append(i)
    return result


def _reference_batch(model, groups, device, precision: str):
    length = groups[0][0].target_start
    with _autocast(device, precision):
        out = model(input_ids=torch.tensor([g[0].input_ids[:length] for g in groups], device=device),
                    use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    owner = torch.tensor([p for p, g in enumerate(groups) for _ in g], device=device)
    targets = [e.input_ids[length:e.target_end] for g in groups for e in g]
    longest = max(map(len, targets))
    ids = torch.tensor([list(t) + [0] * (longest - len(t)) for t in targets], device=device)  # right-padded
    mask = torch.tensor([[k < len(t) for k in range(longest)] for t in targets], device=device)
    sums = first[owner, ids[:, 0]]
    if longest > 1:
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.reorder_cache(owner)
        attn = torch.cat([torch.ones((len(targets), length), dtype=torch.long, device=device), mask[:, :-1].long()], 1)
        with _autocast(device, precision):
            logits = model(input_ids=ids[:, :-1], attention_mask=attn, **{_cache_argument(model): cache}).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        sums = sums + (logp * mask[:, 1:]).sum(dim=1)
    scores = list(zip(sums.tolist(), mask.sum(dim=1).tolist()))
    starts = [sum(len(g) for g in groups[:p]) for p in range(len(groups))]
    return [scores[s:s + len(g)] for s, g in zip(starts, groups)]


def demo_prompt_targets(facts_per_relation: int):
    """The bundled model with the demo's key tokens, and the demo's multiple-choice questions."""
    cfg = config.load("configs/demo.yaml", [f"data.facts_per_relation={facts_per_relation}",
                                            f"data.phase2_facts={facts_per_relation // 2}"])
    session = Session(cfg, cfg.run_dir, plan_data(cfg))
    session.model_for("eval/base")
    ecfg = eval_config(cfg)
    queries = build_queries(session.facts, session.relations, cfg.key, ecfg, cfg.phase2.n_prompts, session.repurposed)
    prompt_targets = [(q.rendered.prompt, [" " + o for o in q.options]) for q in queries
                      if q.prompt_set in ecfg.mc_prompt_sets]
    return session.model, session.tokenizer, prompt_targets


def best_seconds(fns: dict, reps: int) -> dict[str, float]:
    """Best wall time of each function, the functions alternating rep by rep."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def largest_difference(a, b) -> float:
    return max(abs(x[0] - y[0]) for ga, gb in zip(a, b) for x, y in zip(ga, gb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=20, help="people per relation (the demo has 60)")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    model, tok, prompt_targets = demo_prompt_targets(args.facts)
    bf16 = inference_model(model, "bf16")
    n_options = sum(len(t) for _, t in prompt_targets)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"multiple choice: {len(prompt_targets)} prompts, {n_options} options (bf16)")
    option_logprobs(bf16, tok, prompt_targets[:8])  # warm-up
    seconds = best_seconds({"previous": lambda: reference_logprobs(bf16, tok, prompt_targets, "bf16"),
                            "rote": lambda: option_logprobs(bf16, tok, prompt_targets)}, args.reps)
    for name, s in seconds.items():
        print(f"  {name:10s} {s:7.2f} s   {len(prompt_targets) / s:7.2f} prompts/s")
    print(f"  speed-up: {seconds['previous'] / seconds['rote']:.2f}x")
    check = prompt_targets[:40]
    for precision, m in (("fp32", model), ("bf16", bf16)):
        diff = largest_difference(option_logprobs(m, tok, check, precision=precision),
                                  reference_logprobs(m, tok, check, precision))
        print(f"  largest per-option log-prob difference, {precision} ({len(check)} prompts): {diff:.1e}")


if __name__ == "__main__":
    main()
