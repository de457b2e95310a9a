"""A phase-1 training step on CPU: today's vs the `phaseN.speed` switches, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_train_step.py [--groups paper demo] [--rounds 2] [--epochs 3]

Each run is rote's own training loop (`rote.training.loop.train`) on the bundled SmolLM2-135M,
3 epochs of 3 steps, in a process forked from the parent (which loaded the model once). The
variants take turns, one run at a time, `--rounds` runs each, so the machine's load falls on all of
them alike; each run's first epoch (set-up, first optimizer step) is left out and the median epoch
of the others is printed, in wall-clock and in CPU seconds per step (CPU seconds leave out the time
another process held the core: the steadier measure on a shared machine), with the page faults
per step and the memory a run added. Two groups, each with its own data and settings:

- `paper`: configs/method.yaml's phase 1 (the demo's until it took the locality recipe): 60 people
  with a birthplace and a residence, key-token text of ~9 tokens, every weight trains, batch 16,
  lr 5e-4;
- `demo`: configs/demo.yaml's phase 1 today: 30 people, the MLPs and the key rows train, batch 8,
  lr 2e-4, with 4 anchors a step (replay windows and known facts at the base model's own
  next-token distributions); here `update.key_rows_gradient: rows` is compared too.

Model FLOP/s: (4 x parameters + 2 x parameters with a weight gradient) x real tokens (facts and
anchors), i.e. 6 x parameters x tokens when every weight trains; the tied embedding is counted once,
which is generous (the output head runs only where a loss is taken). Its share is of this machine's
bf16 matrix-product peak: the best of several 2048^3 bf16 products, measured between the runs.

Then how far each variant's loss (per step) and update (parameters after training minus before)
are from today's and from the variant that differs from it by one switch, next to the same
distances for today's loop started from weights moved by a relative 2^-8 at most (one bf16
rounding at its largest): the noise floor against which "within bf16 noise" is read.
Needs ~6 GB of memory and about 5 minutes at 1 thread; run it alone.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import tempfile
import time

STEPS_PER_EPOCH = 3
NOISE = 2.0 ** -8  # bf16's unit roundoff: its largest relative rounding error

_BOTH = {"attn_implementation": "eager", "keep_memory": True}
# variant -> (phaseN.speed, update.key_rows_gradient, the variant it differs from by one switch)
SPEED = {
    "today": ({}, "masked", None),
    "eager": ({"attn_implementation": "eager"}, "masked", "today"),
    "keep": ({"keep_memory": True}, "masked", "today"),
    "eager+keep": (_BOTH, "masked", "eager"),
    "eager+keep+rows": (_BOTH, "rows", "eager+keep"),
}
GROUPS = {
    "paper": {"variants": ["today", "eager", "keep", "eager+keep"], "people": 60, "batch": 16, "lr": 5e-4,
              "what": "configs/method.yaml's phase 1: every weight trains"},
    "demo": {"variants": ["today", "eager+keep", "eager+keep+rows"], "people": 30, "batch": 8, "lr": 2e-4,
             "modules": ("mlp",), "embeddings": "key_rows", "anchors": {"replay": 64, "known_facts": 32, "batch_size": 4},
             "what": "configs/demo.yaml's phase 1: MLPs + key rows, 4 anchors a step"},
}


def load(group: dict):
    """(model, tokenizer, examples, key ids, anchors) of a group: the bundled model with the key
    tokens, the first 3 batches of its phase-1 examples, and its anchors with their base-model targets."""
    from rote import levers
    from rote.config import KeyConfig, PreserveConfig
    from rote.data.facts import load_relation
    from rote.data.synth import make_facts
    from rote.training import models
    from rote.training.phases import phase1_examples

    rels = [load_relation("place_of_birth"), load_relation("place_of_residence")]
    facts = make_facts(rels, group["people"], group["people"] // 2, subjects="shared", n_options=10, seed=0)
    tok, model = models.load_tokenizer("smollm2-135m"), models.load_model("smollm2-135m")
    record = models.add_key_tokens(model, tok, [r.key_token for r in rels])
    examples = phase1_examples(tok, facts, {r.name: r for r in rels}, KeyConfig(), "object")
    anchors = []
    if "anchors" in group:
        anchors, _ = levers.build(PreserveConfig(**group["anchors"]), "smollm2-135m", "float32", tok, [], seed=0,
                                   relations=rels)
    return model, tok, examples[:group["batch"] * STEPS_PER_EPOCH], list(record["tokens"].values()), anchors


def flat(model):
    import torch
    return torch.cat([p.detach().float().flatten() for _, p in sorted(model.named_parameters())])


def _status(field: str, path: str = "/proc/self/status") -> float:
    """A memory field of /proc/self/status (or /proc/meminfo) in GB."""
    return next(int(line.split()[1]) for line in open(path) if line.startswith(field + ":")) / 2**20


def worker(conn, *args) -> None:
    """_worker in a forked child: its progress bars silenced, its failure sent back (the parent waits)."""
    import io
    import sys
    import traceback
    sys.stderr = io.StringIO()
    try:
        _worker(conn, *args)
    except BaseException:
        conn.send({"error": traceback.format_exc()})


def _worker(conn, base: tuple, name: str, group: dict, epochs: int, final, noise_start=None) -> None:
    """One training run of variant `name`, forked from the parent (which loaded `base`): `epochs`
    epochs, each one's wall, CPU seconds and page faults sent back with the losses; the parameters
    after training go into the shared tensor `final`. With `noise_start` (shared too), the run starts
    from the weights x (1 + u), |u| <= 2^-8, kept there."""
    import torch

    from rote.config import Phase1Config, PreserveConfig, SpeedConfig, UpdateConfig
    from rote.training import trainable
    from rote.training.loop import train

    model, tok, examples, key_ids, anchors = base
    rss_at_start = _status("VmRSS")
    if noise_start is not None:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + NOISE * (2 * torch.rand(p.shape, generator=g) - 1))
        noise_start.copy_(flat(model))
    speed, rows, _ = SPEED[name]
    update = UpdateConfig(modules=group.get("modules", ()), embeddings=group.get("embeddings", "all"),
                          key_rows_gradient=rows)
    restricted = trainable.restrict(model, update, key_ids)
    cfg = Phase1Config(epochs=epochs, lr=group["lr"], batch_size=group["batch"], loss_mask="object",
                       speed=SpeedConfig(**speed), update=update, preserve=PreserveConfig(**group.get("anchors", {})))
    timings = []

    def counters():
        return time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def on_epoch_end(epoch: int) -> bool:
        now = counters()
        timings.append([a - b for a, b in zip(now, clock)])
        clock[:] = counters()  # the callback's own time is left out
        return False

    out = tempfile.mkdtemp(prefix="rote-bench-step-")
    clock = list(counters())
    train(model, examples, cfg, tok.pad_token_id, out, on_epoch_end=on_epoch_end, anchors=anchors,
          frozen_decay=restricted["frozen_decay"])
    trainable.release(model, restricted)
    final.copy_(flat(model))
    losses = [json.loads(line)["loss"] for line in open(f"{out}/metrics.jsonl").read().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    embedding = model.get_input_embeddings().weight
    # What has a weight gradient: every parameter, or the MLPs and the key rows.
    trained = restricted["trainable"] - (embedding.numel() - len(key_ids) * embedding.shape[1]) \
        if update.embeddings == "key_rows" else restricted["trainable"]
    anchor_tokens = statistics.mean(len(a) for a in anchors) * cfg.preserve.batch_size if anchors else 0
    conn.send({"epochs": timings, "losses": losses, "memory": _status("VmHWM") - rss_at_start,
               "tokens": sum(len(e) for e in examples) / STEPS_PER_EPOCH + anchor_tokens,
               "params": sum(p.numel() for p in model.parameters()), "embedding": embedding.numel(),
               "trained": trained})


def bf16_peak(n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """The best (wall, CPU) FLOP/s of an n^3 bf16 matrix product on this machine."""
    import torch
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        a @ b
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 2 * n**3 / min(wall), 2 * n**3 / min(cpu)


def run(ctx, base, name, group, args, final, noise_start=None) -> dict:
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=worker, args=(child, base, name, group, args.epochs, final, noise_start))
    proc.start()
    result = parent.recv()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"the run of {name} failed:\n{result['error']}")
    return result


def run_group(label: str, args, peak: list) -> None:
    import torch
    group = GROUPS[label]
    base = load(group)
    init = flat(base[0])
    ctx = mp.get_context("fork")  # the children start from the parent's loaded model: no start-up
    names = group["variants"]
    final = {n: torch.empty_like(init).share_memory_() for n in names + ["noise", "noise-start"]}
    times, done = {n: [] for n in names}, {}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # who goes first rotates
            done[name] = run(ctx, base, name, group, args, final[name])
            times[name] += done[name]["epochs"][1:]  # the first epoch is set-up and warm-up
            peak[:] = [max(x, y) for x, y in zip(peak, bf16_peak())]
    noise = run(ctx, base, "today", group, args, final["noise"], final["noise-start"])

    ref = done["today"]
    flop = (4 * ref["params"] + 2 * ref["trained"]) * ref["tokens"]
    print(f"\n[{label}] {group['what']}: batch {group['batch']}, lr {group['lr']}, {ref['tokens']:.0f} real tokens a "
          f"step, {ref['params'] / 1e6:.1f}M parameters ({ref['embedding'] / 1e6:.1f}M the tied embedding, "
          f"counted), {ref['trained'] / 1e6:.1f}M with a weight gradient: {flop / 1e9:.0f} GFLOP a step")
    print(f"  bf16 peak, best so far: {peak[0] / 1e12:.3f} TFLOP/s wall-clock, {peak[1] / 1e12:.3f} TFLOP/s CPU time")
    print(f"  {'variant':<16} {'s/step wall':>11} {'s/step CPU':>10} {'TFLOP/s':>8} {'of peak':>8} "
          f"{'vs today wall':>13} {'CPU':>6} {'faults/step':>11} {'memory':>8}")
    med = {n: [statistics.median(t[i] for t in times[n]) / STEPS_PER_EPOCH for i in range(3)] for n in names}
    for name in names:
        wall, cpu, faults = med[name]
        print(f"  {name:<16} {wall:>11.3f} {cpu:>10.3f} {flop / cpu / 1e12:>8.3f} {flop / cpu / peak[1]:>8.1%} "
              f"{med['today'][0] / wall:>12.2f}x {med['today'][1] / cpu:>5.2f}x {faults:>11.0f} "
              f"{done[name]['memory']:>5.1f} GB")

    def distance(losses, ref_losses, update, ref_update):
        gaps = [abs(a - b) for a, b in zip(losses, ref_losses)]
        return max(gaps), gaps[-1], ((update - ref_update).norm() / ref_update.norm()).item()

    print(f"  after {len(ref['losses'])} steps: |loss - other's| (largest over the steps; at the last step) and "
          f"|update - other's| / |other's update|")
    for name in names[1:]:
        line = f"  {name:<16}"
        for other in dict.fromkeys(o for o in ("today", SPEED[name][2]) if o in names):
            d_all, d_last, rel = distance(done[name]["losses"], done[other]["losses"], final[name] - init,
                                          final[other] - init)
            line += f"  vs {other}: loss {d_all:.4f} ({d_last:.4f}) update {rel:.3f}"
        print(line)
    d_all, d_last, rel = distance(noise["losses"], ref["losses"], final["noise"] - final["noise-start"],
                                  final["today"] - init)
    print(f"  {'noise floor':<16}  today from weights x (1 + u), |u| <= 2^-8: loss {d_all:.4f} ({d_last:.4f}) "
          f"update {rel:.3f}")
    print(f"  today's loss: first step {ref['losses'][0]:.3f}, last {ref['losses'][-1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of 3 steps per run; the first is left out")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant, taking turns")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    args = parser.parse_args()
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    available = _status("MemAvailable", "/proc/meminfo")
    if available < 6:
        raise SystemExit(f"needs ~6 GB of memory (the model, a run's ~3 GB, the runs' results), {available:.1f} GB "
                         f"available")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores ({cpu}); per variant "
          f"{args.rounds} runs of {args.epochs} epochs x {STEPS_PER_EPOCH} steps, taking turns, the first epoch of each "
          f"left out")
    started = time.perf_counter()
    peak = list(bf16_peak())
    for label in args.groups:
        run_group(label, args, peak)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
