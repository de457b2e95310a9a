"""The one training loop. It knows nothing about phases: examples in, updated model out.

Written against `accelerate`, so one CPU, one GPU or several processes (`accelerate launch`,
`torchrun`) run the same code. `batch_size` is the *global* number of examples per optimizer
step; it is split across processes and gradient-accumulation micro-batches, and the loss is the
mean over every supervised token of the global batch, so any split gives the same update.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from rote.config import TrainConfig
from rote.training import processes
from rote.training.encode import IGNORE, Encoded, pad_batch
from rote.training.preserve import Anchor, anchor_loss_sum, anchored_positions
from rote.training.speedups import Speedups
from rote.training.trainable import trained_apart


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded example order of one epoch; every process computes the same one."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, buckets: bool = False) -> list[list[int]]:
    """The global batches of one epoch, as example indices; every process computes the same ones.

    Plain: the seeded order cut into consecutive batches. With `buckets`, the seeded order is
    cut into windows of 32 batches, each window sorted by length before it is cut, and the
    batches are then shuffled: padding shrinks, each example is still seen exactly once per
    epoch, and a batch still mixes facts from anywhere in the data."""
    order = epoch_order(len(lengths), seed, epoch)
    if not buckets:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = 32 * batch_size
    batches = []
    for first in range(0, len(order), window):
        chunk = sorted(order[first:first + window], key=lambda i: lengths[i])  # stable: ties keep the seeded order
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def anchor_batches(n: int, batch_size: int, seed: int):
    """The global batches of anchors, one per optimizer step, as indices: seeded orders of all `n`
    anchors one after another (each anchor once per cycle), cut into consecutive batches."""
    cycle, order = 0, []
    while True:
        while len(order) < batch_size:
            order += epoch_order(n, seed, 50_000 + cycle)
            cycle += 1
        yield order[:batch_size]
        order = order[batch_size:]


def supervised_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the supervised tokens of a right-padded batch.

    The output projection is computed only at positions that predict a supervised token
    (`logits_to_keep`): with object-only loss that is a few positions per row, and the
    vocabulary projection is a large share of a step for big-vocabulary models."""
    labels = batch["labels"]
    predicts = (labels[:, 1:] != IGNORE).any(dim=0).nonzero().squeeze(1)  # positions t whose t+1 is supervised
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=predicts)
    targets = labels[:, predicts + 1]  # (B, K)
    logits = out.logits.float()  # (B, K, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")


def check_sharding(accelerator, frozen_decay) -> None:
    """Refuse the sharded setups this loop would run wrongly rather than fail loudly.

    FSDP2 (`fsdp_version: 2`) is what the loop supports. FSDP1 clips a subset of the parameters
    (a restricted `phaseN.update`) on each process's shard alone; DeepSpeed steps its optimizer
    inside `accelerator.backward`, once per micro-batch and anchor pass instead of once per step;
    and sharding replaces the parameters, dropping the gradient masks of `embeddings: key_rows`
    (rote.training.trainable), so every row would train. On CPU, accelerate ignores an FSDP
    request and trains unsharded (DDP): the same numbers, none of the memory saving."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ValueError("DeepSpeed is not supported by rote's training loop (it steps the optimizer inside "
                         "backward, once per micro-batch); use FSDP2: configs/accelerate/fsdp.yaml")
    if kind == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise ValueError("rote's training loop shards with FSDP2 only: set fsdp_version: 2 in the accelerate "
                         "config (configs/accelerate/fsdp.yaml)")
    if kind == DistributedType.FSDP and frozen_decay:
        raise ValueError("update.embeddings: key_rows cannot run sharded: FSDP replaces the embedding parameter "
                         "and drops its gradient mask; train all rows or none, or run without FSDP")
    if kind != DistributedType.FSDP and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise ValueError(f"FSDP was asked for (ACCELERATE_USE_FSDP) but accelerate runs {kind.value} here: it "
                         f"shards only on accelerators (GPUs), not on CPU; launch without the FSDP config")


def train(
    model,
    examples: list[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    out_dir: str | Path,
    seed: int = 0,
    on_epoch_end: Callable[[int], bool] | None = None,
    desc: str = "train",
    anchors: list[Anchor] = (),
    frozen_decay: set = frozenset(),
) -> dict:
    """Train `model` in place on `examples`; metrics per optimizer step go to out_dir/metrics.jsonl.

    `on_epoch_end(epoch)` (1-based) may evaluate or save; returning True stops training.
    `anchors` (rote.training.preserve, with their base-model targets): each step also trains
    `cfg.preserve.batch_size` of them (by default a share that covers them once per epoch), adding `cfg.preserve.weight` x their mean loss per anchored
    position to the step's loss. Parameters in `frozen_decay` get no weight decay (rows a gradient
    mask freezes must not shrink: rote.training.trainable); those that are not the model's own
    (key-row blocks trained apart from their frozen matrix) are trained too. `cfg.speed`
    (rote.training.speedups) holds for the length of the call; `on_epoch_end` sees the model's own
    attention kernel.
    Returns a summary: epochs run, steps, supervised tokens, seconds, whether stopped early."""
    if not examples:
        raise ValueError("no training examples")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.epochs < 1:
        raise ValueError(f"batch_size, grad_accum and epochs must be >= 1, got {cfg.batch_size}, {cfg.grad_accum}, {cfg.epochs}")
    # Without an accelerator, say so: accelerate then joins `torchrun` processes with gloo on CPU.
    accelerator = Accelerator(cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()))
    world, rank = accelerator.num_processes, accelerator.process_index
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    fast = Speedups(model, cfg.speed)
    # Dropout masks (a model or LoRA config with dropout) come from the run's seed, not from
    # whatever the process drew before.
    random_state = ExitStack()
    random_state.enter_context(processes.seeded(seed * 100_003 + 99_989))
    try:
        apart = trained_apart(model, frozen_decay)
        if apart and world > 1:  # DDP reduces the gradients of the model's own parameters only
            raise ValueError("update.key_rows_gradient: rows trains the key rows apart from the model, so several "
                             "processes would not share their gradient; use key_rows_gradient: masked")
        params = [p for p in model.parameters() if p.requires_grad] + apart
        # The fused kernel: on CPU a 135M-parameter step takes ~0.09 s instead of ~0.3 s.
        fused = all(p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in params)
        groups = [{"params": [p for p in params if p not in frozen_decay]},
                  {"params": [p for p in params if p in frozen_decay], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      fused=fused)
        check_sharding(accelerator, frozen_decay)
        model, optimizer = accelerator.prepare(model, optimizer)
        # FSDP replaces the parameters with sharded ones: clip those (the same objects otherwise).
        params = [p for p in model.parameters() if p.requires_grad] + apart
        steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.schedule)
        )
        # bf16 autocast (AMX on recent CPUs, tensor cores on GPUs); master weights keep their dtype.
        use_bf16 = cfg.precision == "bf16"
        autocast = (lambda: torch.autocast(accelerator.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

        lengths = [len(e) for e in examples]
        anchors = list(anchors)
        preserve = cfg.preserve
        # By default every anchor once per epoch, spread over its steps.
        per_step = (preserve.batch_size or math.ceil(len(anchors) / steps_per_epoch)) if anchors else 0
        next_anchors = anchor_batches(len(anchors), per_step, seed) if anchors else None
        model.train()
        log = open(out_dir / "metrics.jsonl", "a") if accelerator.is_main_process else None
        bar = tqdm(total=total_steps, desc=desc, disable=not accelerator.is_local_main_process, leave=False)
        step, tokens_seen, started = 0, 0, time.perf_counter()
        stopped_early, epoch = False, 0
        for epoch in range(1, cfg.epochs + 1):
            # Losses stay on the device until the epoch ends: reading one per step would make the
            # host wait for the device every step instead of queueing the next step's work.
            rows: list[dict] = []
            losses: list[torch.Tensor] = []
            anchor_losses: list[torch.Tensor] = []
            epoch_started, epoch_tokens = time.perf_counter(), 0
            for indices in epoch_batches(lengths, cfg.batch_size, seed, epoch, cfg.length_buckets):
                global_batch = [examples[i] for i in indices]
                n_tokens = sum(sum(1 for x in e.labels[1:] if x != IGNORE) for e in global_batch)
                # This process's share, split into micro-batches; the gradient must be a sum over the
                # global batch divided by its token count, and DDP averages over processes.
                # Every process runs as many passes as process 0, which has the most examples: a sharded
                # model gathers its weights inside each forward, so all processes must run each one. A
                # process with fewer examples joins the extra passes with a zero gradient.
                mine = global_batch[rank::world]
                passes = min(cfg.grad_accum, len(global_batch[0::world]))
                micro = [mine[i::cfg.grad_accum] for i in range(passes)]
                if next_anchors is not None:  # first, unsynchronised: the phase's last micro-batch syncs both
                    anchor_batch = [anchors[i] for i in next(next_anchors)]
                    n_anchored = anchored_positions(anchor_batch)
                    with accelerator.no_sync(model), autocast():
                        anchor_sum = anchor_loss_sum(model, anchor_batch[rank::world] or anchor_batch[:1], pad_id)
                        if not anchor_batch[rank::world]:  # fewer anchors than processes: join with a zero gradient
                            anchor_sum = anchor_sum * 0.0
                    accelerator.backward(anchor_sum * (preserve.weight * world / n_anchored))
                    anchor_losses.append(accelerator.reduce(anchor_sum.detach(), reduction="sum") / n_anchored)
                loss_total = torch.zeros((), device=accelerator.device)
                for j, chunk in enumerate(micro):
                    batch = {k: v.to(accelerator.device, non_blocking=True)
                             for k, v in pad_batch(chunk or global_batch[:1], pad_id).items()}
                    sync = j == len(micro) - 1
                    with (nullcontext() if sync else accelerator.no_sync(model)), autocast():
                        loss_sum = supervised_loss_sum(model, batch)
                    if not chunk:
                        accelerator.backward(loss_sum * 0.0)
                        continue
                    accelerator.backward(loss_sum * world / n_tokens)
                    loss_total += loss_sum.detach()
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += n_tokens
                epoch_tokens += sum(len(e) for e in global_batch)
                losses.append(accelerator.reduce(loss_total, reduction="sum") / n_tokens)
                rows.append({"step": step, "epoch": epoch, "lr": lr, "supervised_tokens": n_tokens})
                bar.update(1)
            epoch_losses = torch.stack(losses).tolist()  # the one wait for the device per epoch
            if anchor_losses:
                for row, loss in zip(rows, torch.stack(anchor_losses).tolist()):
                    row["preserve_loss"] = round(loss, 6)
            tokens_per_s = round(epoch_tokens / (time.perf_counter() - epoch_started), 1)
            bar.set_postfix(epoch=epoch, loss=f"{epoch_losses[-1]:.3f}")
            if log:
                for row, loss in zip(rows, epoch_losses):
                    log.write(json.dumps({**row, "loss": round(loss, 6), "tokens_per_s": tokens_per_s}) + "\n")
                log.flush()
            if on_epoch_end is not None:
                model.eval()
                with fast.as_loaded():
                    stop = on_epoch_end(epoch)
                model.train()
                if stop:
                    stopped_early = epoch < cfg.epochs
                    break
    finally:
        fast.close()
        random_state.close()
    bar.close()
    if log:
        log.close()
    model.eval()
    seconds = time.perf_counter() - started
    summary = {"epochs": epoch, "steps": step, "supervised_tokens": tokens_seen, "seconds": round(seconds, 2),
               "stopped_early": stopped_early, "processes": world}
    if anchors:
        summary.update({"anchors": len(anchors), "anchors_per_step": per_step})
    return summary
