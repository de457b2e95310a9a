"""Several processes of one command (`accelerate launch`, `torchrun`): who writes, where the others
wait, and how evaluation's batches are shared out and merged back.

Launched as several processes, every process runs the same `rote run` (or `rote eval`, `rote
study`). Process 0, the main process, holds the folder's lock (rote.lock) and writes every file;
the others compute their share (training steps, evaluation batches) and wait for it at the end of
each stage. One process (no launcher) is the plain path: every function here then runs its argument
once or hands back what it was given, so nothing changes there.

Evaluation shares out the *batches* a single process would form (every `world`-th batch, from the
process's rank on) rather than slices of the queries: a batch then holds the same rows as in one
process, so each record is computed from the same numbers (bf16 results shift with a batch's
composition), and `merge` puts the records back in query order.
"""
from __future__ import annotations

import os
import pickle
import platform
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# How long a process waits for the others at a collective: the main process alone builds the levers'
# anchors with the base model (on CPU) and the report, while the others wait; torch's default (30 min,
# 10 for NCCL) could run out for a large base model. A process that dies ends the others at once
# (the launcher stops them), so the limit only matters for a real hang.
WAIT = timedelta(hours=3)


def launched() -> int:
    """How many processes the launcher started (its WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def start() -> None:
    """Join the launcher's process group (accelerate's shared state: gloo on CPU, NCCL on GPUs) when
    launched as several processes, with the device the training loop's Accelerator picks; else nothing."""
    if launched() > 1:
        import torch
        from accelerate import PartialState
        PartialState(cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()), timeout=WAIT)


def world() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def device():
    """The device this process computes on: with several processes, accelerate's choice (its GPU,
    or the CPU); in one process, the machine's accelerator (the one the training loop's
    Accelerator picks: CUDA, else MPS), or None on a CPU-only machine, where models stay where
    they were loaded. Models are loaded on the CPU, so whatever evaluates or trains them moves
    them here first: otherwise a one-GPU run evaluates its base model on the CPU."""
    if world() == 1:
        import torch
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return None
    from accelerate import PartialState
    return PartialState().device


def processor(device) -> str:
    """What computes on `device`, as far as it changes numbers: the GPU's name, or the CPU's model and
    the instruction set torch's kernels use on it. bf16 kernels round differently on an Intel CPU
    with AMX than on an AMD one with AVX-512, and on one GPU generation than on another, so a
    measurement kept for reuse (rote.evaluation.reuse) is keyed by it."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return device.type
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    return f"cpu: {model or platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"


def to_device(model):
    """`model`, moved to `device()` when there is one (else left where it was loaded)."""
    target = device()
    return model if target is None else model.to(target)


@contextmanager
def seeded(seed: int):
    """torch's random state seeded with `seed` for the block (dropout masks, LoRA's adapter draw,
    sampled text), and put back as it was found afterwards: a run's numbers then depend on its
    seed, not on what the process did before (a resumed run, a study worker's earlier runs). The
    CPU's generator and this process's own GPU only: forking every visible GPU would open a
    context on each of them in every process."""
    import torch
    gpu = device()
    kind = gpu.type if gpu is not None else "cpu"
    devices = [gpu.index if gpu.index is not None else torch.cuda.current_device()] if kind == "cuda" else []
    mps_state = torch.mps.get_rng_state() if kind == "mps" else None  # (fork_rng forks one device type)
    try:
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)  # (torch.manual_seed would reseed every GPU, unrestored)
            for index in devices:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            if kind == "mps":
                torch.mps.manual_seed(seed)
            yield
    finally:
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)


def on_main(fn: Callable[[], T]) -> T:
    """fn() run by the main process only; its result (or the error it raised) is sent to every
    process, which all return it (or raise it) together. Also a barrier: no process goes on before
    the main process is done. In one process, just fn()."""
    if world() == 1:
        return fn()
    import torch.distributed as dist
    box: list = [None]
    failure = None
    if is_main():
        try:
            box[0] = (True, fn())
        except Exception as e:  # every process stops with it, not only the main one
            failure = e
            box[0] = (False, e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if ok:
        return value
    raise failure if failure is not None else value


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


@contextmanager
def main_holds(folder: str | Path, what: str = "run folder"):
    """The folder's lock (rote.lock.hold) for the `with` block, held by the main process; every
    process waits until it is taken, and every process raises the LockedError when it is not."""
    from rote.lock import hold
    if world() == 1:
        with hold(folder, what):
            yield
        return
    with ExitStack() as held:
        def take() -> None:
            held.enter_context(hold(folder, what))
        on_main(take)
        yield


def sharded(model) -> bool:
    """Whether the model's parameters are themselves sharded across processes (FSDP2: DTensors)."""
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in model.parameters())


def sharing(model, share: bool) -> bool:
    """Whether to share out a model's evaluation batches: asked to (`share`), several processes, and
    a model every process holds whole. A sharded (FSDP2) model gathers its weights inside each forward,
    a collective every process must join: its batches are all run by every process, as in one."""
    return share and world() > 1 and not sharded(model)


def my_share(batches: list[T], share: bool) -> list[T]:
    """This process's batches: every `world`-th from its rank on when sharing, else all of them."""
    return batches[rank()::world()] if share else batches


def merge(mine: dict[int, T], share: bool) -> dict[int, T]:
    """Every process's results, keyed by the index of what they answer, in one dict on every process
    (all_gather_object); `mine` itself when not sharing. Refuses a merge that loses or repeats an index."""
    if not share:
        return mine
    import torch.distributed as dist
    parts: list = [None] * world()
    dist.all_gather_object(parts, mine)
    merged: dict[int, T] = {}
    for part in parts:
        merged.update(part)
    if len(merged) != sum(len(p) for p in parts):
        raise RuntimeError("two processes answered the same index: the batches were not shared out disjointly")
    return merged
