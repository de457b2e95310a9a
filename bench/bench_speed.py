"""Speed of training and evaluation on the bundled model, each measured side by side in one run.

    .venv/bin/python bench/bench_speed.py [--model smollm2-135m] [--quick]

Prints, for this machine:
1. phase-1 training: tokens/s of rote's loop (bf16 autocast, batch 16, fused AdamW, logits only
   at supervised positions) vs a reference-style step (fp32, batch 1, full logits, loss on all
   tokens, the official code's settings), and model FLOP utilisation against the bf16
   matrix-product peak measured in the same run;
2. multiple-choice scoring of 100 options per prompt: rote's shared-prompt-cache scoring vs one
   forward per option, prompts/s and the largest log-probability difference;
3. greedy generation: examples/s.
Run it alone: another busy process on a 2-core machine distorts every number.
"""
from __future__ import annotations

import argparse
import time

import torch

from rote.config import TrainConfig
from rote.data.facts import load_relation
from rote.data.synth import make_facts
from rote.evaluation.scoring import generate, option_logprobs
from rote.training import models
from rote.training.encode import encode, pad_batch
from rote.training.loop import supervised_loss_sum, train


def bf16_peak_flops(n: int = 2048, reps: int = 5) -> float:
    """Matrix-product FLOP/s in bf16 on this device: the ceiling training could reach."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench_training(name: str, quick: bool) -> None:
    tok = models.load_tokenizer(name)
    rel = load_relation("place_of_birth")
    facts = make_facts([rel], 64, 1, n_options=4, seed=0)
    texts = [(f"{f.subject} lives in the city of", " " + f.object) for f in facts]
    n_params = sum(p.numel() for p in models.load_model(name).parameters())

    # rote: the training loop itself, one epoch over 64 examples at batch 16
    model = models.load_model(name)
    examples = [encode(tok, p, t, mask="object") for p, t in texts]
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-5, warmup_steps=0, precision="bf16")
    train(model, examples[:16], cfg, tok.pad_token_id, "/tmp/rote-bench")  # warm-up
    t = time.perf_counter()
    train(model, examples, cfg, tok.pad_token_id, "/tmp/rote-bench")
    rote_s = time.perf_counter() - t
    rote_tokens = sum(len(e) for e in examples)

    # reference style: fp32, batch 1, loss on all tokens (full logits), plain AdamW
    model = models.load_model(name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    all_tokens = [encode(tok, p, t, mask="all") for p, t in texts]
    n_ref = 8 if quick else 16

    def ref_step(i=[0]):
        e = all_tokens[i[0] % len(all_tokens)]
        i[0] += 1
        ids = torch.tensor([e.input_ids])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    ref_s = timed(ref_step, n_ref) * len(all_tokens)
    peak = bf16_peak_flops()
    flops = 6 * n_params * rote_tokens / rote_s
    print(f"training ({len(examples)} examples, {rote_tokens} tokens, {n_params / 1e6:.0f}M parameters)")
    print(f"  rote loop (bf16, batch 16):          {rote_tokens / rote_s:8.0f} tokens/s  {rote_s:6.1f} s/epoch")
    print(f"  reference style (fp32, batch 1):     {rote_tokens / ref_s:8.0f} tokens/s  {ref_s:6.1f} s/epoch")
    print(f"  speed-up per epoch:                  {ref_s / rote_s:8.1f}x")
    print(f"  model FLOP/s {flops / 1e12:.2f} T of measured bf16 peak {peak / 1e12:.2f} T: utilisation {flops / peak:.1%}")


def bench_scoring(name: str, quick: bool) -> None:
    tok, model = models.load_tokenizer(name), models.load_model(name)
    rel = load_relation("place_of_birth")
    n_prompts = 4 if quick else 16
    facts = make_facts([rel], n_prompts, 1, n_options=100, seed=0)
    prompt_targets = [(rel.test_prompts["en"][i % 10].replace("{subject}", f.subject), [" " + o for o in f.options])
                      for i, f in enumerate(facts)]
    t = time.perf_counter()
    option_logprobs(model, tok, prompt_targets)
    fast_s = time.perf_counter() - t
    fast = option_logprobs(model, tok, prompt_targets, precision="fp32")  # for the exactness check

    def naive(precision="bf16"):  # one forward per option, full logits, the official code's way (batch 1)
        out = []
        for prompt, targets in prompt_targets:
            row = []
            for target in targets:
                e = encode(tok, prompt, target)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                row.append(sum(logp[k - 1, e.input_ids[k]].item() for k in range(e.target_start, e.target_end)))
            out.append(row)
        return out
    t = time.perf_counter()
    naive()
    slow_s = time.perf_counter() - t
    slow = naive("fp32")
    diff = max(abs(a[0] - b) for fa, sa in zip(fast, slow) for a, b in zip(fa, sa))
    print(f"multiple choice ({n_prompts} prompts x 100 options)")
    print(f"  rote (shared prompt cache):          {n_prompts / fast_s:8.2f} prompts/s")
    print(f"  one forward per option:              {n_prompts / slow_s:8.2f} prompts/s")
    print(f"  speed-up:                            {slow_s / fast_s:8.1f}x   largest fp32 log-prob difference {diff:.1e}")

    prompts = [p for p, _ in prompt_targets] * (2 if quick else 4)
    t = time.perf_counter()
    generate(model, tok, prompts, max_new_tokens=16, batch_size=64)
    gen_s = time.perf_counter() - t
    print(f"generation ({len(prompts)} prompts, 16 new tokens): {len(prompts) / gen_s:8.1f} examples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_training(args.model, args.quick)
    bench_scoring(args.model, args.quick)


if __name__ == "__main__":
    main()
