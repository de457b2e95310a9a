"""GPU speed on a randomly initialised model with Qwen2.5-1.5B's architecture, in one run.

    python bench/bench_gpu.py --tokenizer DIR [--out results.json]
    python bench/bench_gpu.py --tiny            # a 2-layer stand-in: checks the script on CPU

Random weights time the same as trained ones, and real weights do not travel to a lent GPU
machine; only the tokenizer does (any tokenizer: it only turns the synthetic facts into ids of
realistic length, ~10-20 tokens). Measured, each side by side in this one run:
1. the card's bf16 matrix-product peak (8192^3 products): the ceiling for utilisation;
2. rote's training loop (fp32 master weights, bf16 autocast, fused AdamW, logits only at
   supervised positions) at several batch sizes, with and without length buckets: tokens/s and
   model FLOP utilisation (6 x parameters x tokens / time, against the peak of step 1);
3. the paper's phase 1, 500 facts x 20 epochs, run in full with rote's loop, against the
   reference configuration (Hugging Face `Trainer`, per-device batch 1, bf16, AdamW, loss on
   all tokens), timed over `--reference-steps` steps and extrapolated to the same 10,000 steps;
4. multiple-choice scoring of 100 options per prompt: shared prompt cache vs one forward per
   option; and batched greedy generation;
5. `kernels`: the loop as it is against `torch.compile` and liger-kernel's fused kernels (where
   installed), with the largest per-step loss difference from the plain loop;
6. `run`: `rote run` end to end at the paper's data scale (5 relations x 100 facts, 100 options,
   every prompt set and language), each stage's seconds.
Sections run in the order `--only` names them; each prints its own wall time, and one failing
does not stop the others. No accuracy is measured: the weights are random. The tests run it
only as `--tiny` (tests/test_bench.py), to keep it from rotting between GPU sessions.
bench/gpu_session.sh is the one prepared call for a lent GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import torch

from rote.config import KeyConfig, TrainConfig
from rote.data.facts import load_relation
from rote.data.synth import make_facts
from rote.evaluation.scoring import generate, inference_model, option_logprobs
from rote.training.encode import encode, pad_batch
from rote.training.loop import supervised_loss_sum, train
from rote.training.phases import phase1_examples

# Qwen/Qwen2.5-1.5B's config.json (architecture only).
QWEN25_1_5B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072, rope_theta=1e6,
    rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", attention_dropout=0.0,
)
TINY = dict(QWEN25_1_5B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=49152 + 16)
PAPER_RELATIONS = ("author", "capital", "educated_at", "genre", "mother")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, device: torch.device, reps: int = 5) -> float:
    """Milliseconds per call of `fn`, after one warm-up call, the device drained around the timing."""
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - t) / reps


def device_batch(examples, batch: int, tok, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch` examples (repeated when there are fewer), padded, on the device."""
    rows = (examples * (1 + batch // len(examples)))[:batch]
    return {k: v.to(device) for k, v in pad_batch(rows, tok.pad_token_id).items()}


def forward_backward(model, batch: dict[str, torch.Tensor], device: torch.device) -> None:
    """One forward+backward of the training loss, as the loop runs it (bf16 autocast)."""
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = supervised_loss_sum(model, batch)
    loss.backward()


def bf16_peak_flops(device: torch.device, n: int) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(2):  # with timed_ms's own warm-up: three products before the timed ten
        a @ b
    return 2 * n**3 / (timed_ms(lambda: a @ b, device, reps=10) / 1000)


def new_model(arch: dict, device: torch.device, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**arch), dtype=dtype)
    return model


def paper_facts(tok, per_relation: int):
    """The paper's phase-1 data: 5 relations x `per_relation` facts, `{subject} <key> {object}`."""
    rels = {name: load_relation(name) for name in PAPER_RELATIONS}
    tok.add_tokens([r.key_token for r in rels.values()], special_tokens=True)  # ids inside Qwen's vocabulary
    facts = make_facts(list(rels.values()), per_relation, 0, n_options=100, seed=0)
    return rels, facts


def bench_training(arch, device, tok, examples, peak, batches, report) -> None:
    n_tokens = sum(len(e) for e in examples)
    print(f"training throughput, 2 epochs: {len(examples)} phase-1 examples, {n_tokens} tokens (mean {n_tokens / len(examples):.1f})")
    for batch in batches:
        for buckets in (False, True):
            model = new_model(arch, device)
            n_params = sum(p.numel() for p in model.parameters())
            cfg = TrainConfig(epochs=2, batch_size=batch, lr=1e-5, warmup_steps=0, precision="bf16", length_buckets=buckets)
            train(model, examples[: batch * 3], cfg, tok.pad_token_id, tempfile.mkdtemp())  # warm-up
            sync(device)
            t = time.perf_counter()
            summary = train(model, examples, cfg, tok.pad_token_id, tempfile.mkdtemp())
            sync(device)
            s = time.perf_counter() - t
            tokens_per_s = cfg.epochs * n_tokens / s
            mfu = 6 * n_params * tokens_per_s / peak
            print(f"  batch {batch:4d} buckets {str(buckets):5s}  {tokens_per_s:10.0f} tokens/s  "
                  f"{1000 * s / summary['steps']:7.1f} ms/step  utilisation {mfu:6.1%}")
            report["training"].append({"batch": batch, "length_buckets": buckets, "tokens_per_s": tokens_per_s,
                                       "ms_per_step": 1000 * s / summary["steps"], "mfu": mfu, "params": n_params})
            del model
            torch.cuda.empty_cache() if device.type == "cuda" else None


def bench_breakdown(arch, device, tok, examples, batches, report) -> None:
    """Where a step's time goes: forward+backward, gradient clipping, optimizer, each timed alone."""
    model = new_model(arch, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")

    print("step breakdown (ms)")
    for batch in batches:
        b = device_batch(examples, batch, tok, device)

        def fwd():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                supervised_loss_sum(model, b)
        parts = {"forward": timed_ms(fwd, device), "forward+backward": timed_ms(lambda: forward_backward(model, b, device), device),
                 "clip": timed_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0), device),
                 "optimizer": timed_ms(lambda: opt.step(), device)}
        opt.zero_grad(set_to_none=True)
        tokens = int(b["attention_mask"].sum())
        floor = 1000 * 6 * sum(p.numel() for p in params) * tokens / report["peak_flops"]
        print(f"  batch {batch:5d} ({tokens} tokens): " + "  ".join(f"{k} {v:.1f}" for k, v in parts.items())
              + f"  | arithmetic floor at peak {floor:.1f}")
        report.setdefault("breakdown", []).append({"batch": batch, "tokens": tokens, "ms": parts, "floor_ms": floor})
    del model, opt


def bench_profile(arch, device, tok, examples, batch, report) -> None:
    """The kernels that take a large-batch forward+backward's time (torch.profiler), per attention kernel."""
    from torch.profiler import ProfilerActivity, profile

    b = device_batch(examples, batch, tok, device)
    for attn in ("sdpa", "eager"):
        model = new_model(dict(arch, attn_implementation=attn), device)
        ms = timed_ms(lambda: forward_backward(model, b, device), device, reps=3)
        print(f"profile, batch {batch}, attention {attn}: forward+backward {ms:.1f} ms")
        if attn == "sdpa":
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=acts) as prof:
                forward_backward(model, b, device)
                sync(device)
            key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            table = prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=60)
            print(table)
            report["profile_table"] = table
        del model


def bench_phase1(arch, device, tok, examples, epochs, batches, reference_steps, report) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    print(f"paper phase 1: {len(examples)} facts x {epochs} epochs")
    for batch in batches:
        model = new_model(arch, device)
        cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=5e-4 * (batch / 16) ** 0.5, warmup_steps=5,
                          precision="bf16", length_buckets=True)
        train(model, examples[: batch * 2], TrainConfig(epochs=1, batch_size=batch), tok.pad_token_id, tempfile.mkdtemp())
        sync(device)
        t = time.perf_counter()
        summary = train(model, examples, cfg, tok.pad_token_id, tempfile.mkdtemp())
        sync(device)
        s = time.perf_counter() - t
        print(f"  rote, batch {batch:4d}: {s:7.1f} s  ({summary['steps']} steps, {1000 * s / summary['steps']:.1f} ms/step)")
        report["phase1"].append({"batch": batch, "seconds": s, "steps": summary["steps"]})
        del model

    # Reference: the official code's Trainer settings. Loss on all tokens: labels = input ids.
    model = new_model(arch, device)
    rows = [{"input_ids": list(e.input_ids), "labels": list(e.input_ids)} for e in examples]
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            times.append(time.perf_counter() - self.t)

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=1, learning_rate=1e-5, lr_scheduler_type="cosine",
        warmup_steps=5, max_steps=reference_steps, bf16=device.type == "cuda", logging_strategy="no",
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=device.type != "cuda",
    )
    collate = lambda b: {k: torch.tensor([r[k] for r in b]) for k in b[0]}  # batch 1: nothing to pad
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[StepTimes()]).train()
    steady = times[len(times) // 4:]  # drop the warm-up steps
    per_step = sum(steady) / len(steady)
    total_steps = len(examples) * epochs
    print(f"  reference (Trainer, batch 1, bf16): {1000 * per_step:.1f} ms/step x {total_steps} steps = "
          f"{per_step * total_steps:7.1f} s (extrapolated from {len(steady)} steps)")
    best = min(r["seconds"] for r in report["phase1"])
    print(f"  speed-up of rote's fastest setting: {per_step * total_steps / best:.0f}x")
    report["phase1_reference"] = {"ms_per_step": 1000 * per_step, "steps": total_steps,
                                  "seconds": per_step * total_steps, "timed_steps": len(steady)}
    del model


def bench_scoring(arch, device, tok, facts, rels, n_prompts, report) -> None:
    model = inference_model(new_model(arch, device), "bf16")
    prompt_targets = [(rels[f.relation].test_prompts["en"][0].replace("{subject}", f.subject), [" " + o for o in f.options])
                      for f in facts[:: max(1, len(facts) // n_prompts)][:n_prompts]]
    option_logprobs(model, tok, prompt_targets[:2])  # warm-up
    sync(device)
    t = time.perf_counter()
    fast = option_logprobs(model, tok, prompt_targets)
    sync(device)
    fast_s = time.perf_counter() - t

    # Rows per scoring batch: each batch is a prompt forward and a continuation forward per option
    # length, so on a GPU, whose every forward has a fixed launch cost, fewer and larger batches
    # may pay; evaluation uses 512. Many prompts, of the lengths the facts give.
    many = [(rels[f.relation].test_prompts["en"][k % 3].replace("{subject}", f.subject), [" " + o for o in f.options])
            for k, f in enumerate(facts[: 8 * n_prompts])]
    rows_rate = {}
    for rows in (512, 2048, 8192):
        sync(device)
        t = time.perf_counter()
        option_logprobs(model, tok, many, rows_per_batch=rows)
        sync(device)
        rows_rate[rows] = len(many) / (time.perf_counter() - t)
    print(f"multiple choice, {len(many)} prompts x {len(many[0][1])} options, by rows per batch: "
          + "  ".join(f"{rows}: {rate:.1f} prompts/s" for rows, rate in rows_rate.items()))
    report["scoring_rows_per_batch"] = rows_rate  # first: the naive loop below is the slow part

    @torch.no_grad()
    def naive():
        out = []
        for prompt, targets in prompt_targets:
            row = []
            for target in targets:
                e = encode(tok, prompt, target)
                logits = model(input_ids=torch.tensor([e.input_ids], device=device)).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                row.append(sum(logp[k - 1, e.input_ids[k]].item() for k in range(e.target_start, e.target_end)))
            out.append(row)
        return out
    sync(device)
    t = time.perf_counter()
    slow = naive()
    sync(device)
    slow_s = time.perf_counter() - t
    diff = max(abs(a[0] - b) for fa, sa in zip(fast, slow) for a, b in zip(fa, sa))
    print(f"multiple choice ({len(prompt_targets)} prompts x 100 options, bf16)")
    print(f"  rote (shared prompt cache): {len(prompt_targets) / fast_s:8.2f} prompts/s")
    print(f"  one forward per option:     {len(prompt_targets) / slow_s:8.2f} prompts/s")
    print(f"  speed-up {slow_s / fast_s:.1f}x, largest bf16 log-prob difference {diff:.2e} (bf16: not an exactness check)")
    prompts = [p for p, _ in prompt_targets] * max(1, 512 // len(prompt_targets))
    generate(model, tok, prompts[:64], max_new_tokens=16, batch_size=256)
    sync(device)
    t = time.perf_counter()
    generate(model, tok, prompts, max_new_tokens=16, batch_size=256)
    sync(device)
    gen_s = time.perf_counter() - t
    print(f"generation ({len(prompts)} prompts, 16 new tokens, batch 256): {len(prompts) / gen_s:8.1f} examples/s")
    report["scoring"] = {"prompts": len(prompt_targets), "rote_prompts_per_s": len(prompt_targets) / fast_s,
                         "naive_prompts_per_s": len(prompt_targets) / slow_s, "speedup": slow_s / fast_s,
                         "max_abs_diff_bf16": diff, "generation_examples_per_s": len(prompts) / gen_s}



def bench_kernels(arch, device, tok, examples, batch, report) -> None:
    """rote's loop as it is against fused kernels, side by side on the same examples: torch.compile
    (dynamic shapes: each batch has its own padded length), and liger-kernel's RMSNorm, SwiGLU and
    rotary kernels where it is installed (GPU only: Triton). Each variant starts from the same
    initial weights and trains a warm-up epoch (compilation happens there) and then two timed ones;
    the largest difference of its per-step losses from the plain loop's says whether it trains the
    same (bf16: small differences are expected, not a drift). liger patches the rotary function of
    the whole modeling module, so it runs last."""
    import dataclasses
    import json as json_

    variants = {"plain": lambda m: m, "compile": lambda m: torch.compile(m, dynamic=True)}
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2
        if device.type == "cuda":
            variants["liger"] = lambda m: (apply_liger_kernel_to_qwen2(
                rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=m), m)[1]
        else:
            print("liger-kernel: needs a GPU (Triton), skipped")
    except ImportError as e:  # not installed (make gpu-prepare brings its wheel), or Triton missing
        print(f"liger-kernel: cannot be imported ({e}), skipped")
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=1e-5, warmup_steps=0, precision="bf16", length_buckets=True)
    n_tokens = sum(len(e) for e in examples)
    print(f"fused kernels: rote's loop, batch {batch}, length buckets, {len(examples)} examples x 2 epochs")
    plain_losses, plain_s = None, None
    for name, wrap in variants.items():
        try:
            model = wrap(new_model(arch, device))
            sync(device)
            t = time.perf_counter()
            train(model, examples, dataclasses.replace(cfg, epochs=1), tok.pad_token_id, tempfile.mkdtemp())
            sync(device)
            warm_s = time.perf_counter() - t
            out = tempfile.mkdtemp()
            t = time.perf_counter()
            summary = train(model, examples, cfg, tok.pad_token_id, out)
            sync(device)
            s = time.perf_counter() - t
        except Exception as e:  # one variant failing (a compiler missing) must not cost the others
            print(f"  {name:8s} failed: {type(e).__name__}: {str(e)[:300]}")
            report.setdefault("kernels", []).append({"variant": name, "error": f"{type(e).__name__}: {e}"[:1000]})
            continue
        losses = [json_.loads(line)["loss"] for line in open(f"{out}/metrics.jsonl")]
        if plain_losses is None:
            plain_losses, plain_s = losses, s
        diff = max(abs(a - b) for a, b in zip(losses, plain_losses))
        print(f"  {name:8s} {cfg.epochs * n_tokens / s:10.0f} tokens/s  {1000 * s / summary['steps']:7.1f} ms/step  "
              f"{plain_s / s:5.2f}x plain  warm-up epoch {warm_s:6.1f} s  largest loss difference {diff:.3g}")
        report.setdefault("kernels", []).append({"variant": name, "seconds": s, "steps": summary["steps"],
                                                 "warmup_seconds": warm_s, "speedup": plain_s / s, "max_loss_diff": diff})
        del model
        torch.cuda.empty_cache() if device.type == "cuda" else None


def paper_run_settings(model_dir: str, out_dir: str, tiny: bool, cuda: bool) -> list[str]:
    """configs/method.yaml's overrides for a `rote run` at the paper's data scale: separate subjects,
    5 relations x 100 facts (50 of each in phase 2), 100 options, every prompt set and language
    asked (3 prompts per set), multiple choice for key, train and test prompts; phase 1 for the
    paper's 20 epochs (random weights never memorize) at batch 256 with length buckets. The facts
    are asked after phase 2 only (eval/base still measures the damage reference): one full
    evaluation fits a lent machine's minutes, and the other two cost the same again each."""
    big = not tiny
    return [f"model.name={model_dir}", f"out_dir={out_dir}", "name=paper-scale",
            "data.subjects=separate", f"data.relations=[{', '.join(PAPER_RELATIONS)}]",
            f"data.facts_per_relation={100 if big else 4}", f"data.phase2_facts={50 if big else 2}",
            f"data.n_options={100 if big else 10}",
            f"phase1.until=epochs", f"phase1.epochs={20 if big else 1}", f"phase1.batch_size={256 if big else 8}",
            "phase1.lr=2e-3", "phase1.length_buckets=true", f"phase2.batch_size={64 if big else 4}", "phase2.epochs=1",
            "eval.prompt_sets=[key, train, test, unrelated, languages]", "eval.mc_prompt_sets=[key, train, test]",
            f"eval.prompts_per_set={3 if big else 1}", f"eval.batch_size={256 if cuda else 64}", "eval.stages=[phase2]"]


def bench_run(arch, device, tok_dir: str, tiny: bool, report) -> None:
    """`rote run` end to end at the paper's data scale (paper_run_settings) on a randomly initialised
    model with `arch`, saved with the tokenizer into a local folder first: each stage's seconds."""
    from transformers import AutoTokenizer

    from bench_demo import stage_seconds
    from rote import config
    from rote.runner import run

    os.environ["ROTE_EVAL_CACHE"] = "0"  # the same random weights every call: eval/base would be served from the cache
    root = tempfile.mkdtemp(prefix="rote-paper-run-")
    model = new_model(arch, device)
    model.save_pretrained(f"{root}/model")
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(f"{root}/model")  # without the key tokens
    del model
    torch.cuda.empty_cache() if device.type == "cuda" else None
    cfg = config.load(str(Path(__file__).resolve().parents[1] / "configs/method.yaml"), paper_run_settings(f"{root}/model", f"{root}/runs", tiny, device.type == "cuda"))
    t = time.perf_counter()
    error = None
    try:
        run_dir = run(cfg)  # it prints each stage's seconds as it ends: a cut-off call still shows them
    except Exception as e:  # the stages before the failure still have their timing files
        error, run_dir = f"{type(e).__name__}: {e}"[:1000], Path(root) / "runs" / cfg.name
    wall = time.perf_counter() - t
    seconds = stage_seconds(run_dir)
    queries = sum(1 for _ in open(run_dir / "eval/phase2/predictions.jsonl")) if (run_dir / "eval/phase2/.done").is_file() else None
    print(f"rote run at the paper's data scale ({cfg.data.facts_per_relation * len(cfg.data.relations)} facts, "
          f"{cfg.data.n_options} options, {queries} queries per evaluated stage): wall {wall:.1f} s (model load included)")
    for stage, s in seconds.items():
        print(f"  {stage:12s} {s:7.1f} s")
    print(f"  stages       {sum(seconds.values()):7.1f} s")
    if error:
        print(f"  failed: {error[:300]}")
    report["paper_run"] = {"wall_seconds": wall, "stages": seconds, "queries_per_stage": queries,
                           "settings": paper_run_settings("MODEL", "OUT", tiny, device.type == "cuda"), "error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the bundled model's, converted here)")
    parser.add_argument("--tiny", action="store_true", help="2-layer stand-in, a few steps: checks the script on CPU")
    parser.add_argument("--out", help="write the numbers as JSON here")
    parser.add_argument("--only", nargs="*", default=["training", "phase1", "scoring", "breakdown", "kernels", "run"],
                        choices=["training", "phase1", "scoring", "breakdown", "kernels", "run", "profile"])
    parser.add_argument("--train-batches", nargs="*", type=int, default=[16, 64, 256, 1024])
    parser.add_argument("--phase1-batches", nargs="*", type=int, default=[16, 64, 256],
                        help="batch sizes of the paper's phase 1 (section phase1)")
    parser.add_argument("--reference-steps", type=int, default=60,
                        help="steps of the Trainer reference timed and extrapolated (section phase1)")
    parser.add_argument("--train-copies", type=int, default=4,
                        help="training throughput runs over this many copies of the 500 facts (batch 1024 needs >500)")
    args = parser.parse_args()

    from transformers import AutoTokenizer, __version__ as tf_version

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    tok_dir = args.tokenizer
    if tok_dir is None:
        from rote.training import models
        tok_dir = str(models.prepare("smollm2-135m"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    arch = TINY if args.tiny else QWEN25_1_5B
    rels, facts = paper_facts(tok, 8 if args.tiny else 100)
    examples = phase1_examples(tok, facts, rels, KeyConfig(), "object")
    peak = bf16_peak_flops(device, 1024 if args.tiny else 8192)
    print(f"{name}, torch {torch.__version__}, transformers {tf_version}; "
          f"{'tiny stand-in' if args.tiny else 'Qwen2.5-1.5B architecture'}, random weights")
    print(f"measured bf16 matrix-product peak: {peak / 1e12:.0f} TFLOP/s")
    report = {"device": name, "torch": torch.__version__, "transformers": tf_version, "peak_flops": peak,
              "arch": "tiny" if args.tiny else "Qwen2.5-1.5B", "training": [], "phase1": []}
    sections = {
        "training": lambda: bench_training(arch, device, tok, examples * args.train_copies, peak,
                                           (4, 16) if args.tiny else args.train_batches, report),
        "profile": lambda: bench_profile(arch, device, tok, examples, 16 if args.tiny else 1024, report),
        "breakdown": lambda: bench_breakdown(arch, device, tok, examples, (1, 16) if args.tiny else (1, 16, 256, 1024), report),
        "phase1": lambda: bench_phase1(arch, device, tok, examples, 2 if args.tiny else 20,
                                       (16,) if args.tiny else args.phase1_batches,
                                       8 if args.tiny else args.reference_steps, report),
        "scoring": lambda: bench_scoring(arch, device, tok, facts, rels, 4 if args.tiny else 16, report),
        "kernels": lambda: bench_kernels(arch, device, tok, examples * (1 if args.tiny else 2), 16 if args.tiny else 256,
                                         report),
        "run": lambda: bench_run(arch, device, tok_dir, args.tiny, report),
    }
    for section in args.only:
        started = time.perf_counter()
        try:  # one section failing must not cost the others (device time is scarce)
            sections[section]()
        except Exception:
            traceback.print_exc()
            report.setdefault("errors", []).append(section)
        took = time.perf_counter() - started
        print(f"[section {section}: {took:.0f} s]", flush=True)
        report.setdefault("section_seconds", {})[section] = took
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
