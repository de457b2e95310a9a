"""How a training step runs on the hardware (`phaseN.speed`), each switch off by default.

Every switch here keeps one step's update within bf16 rounding noise of the default step;
`bench/bench_train_step.py` measures both the speed and how far the loss and the update move
(LOG.md, 2026-12-01). Over a whole study that is not the same as no change: `eager` moved the
depth study's results at every seed, for 1.03x at 2 threads (bench/README.md), so no shipped
config turns it on. `keep_memory` changes no bit. The training loop (rote.training.loop) turns them on for the length of
`train()`; the attention kernel goes back to the model's own around the loop's epoch-end callback,
so evaluation and checkpoints during and after training see the model as loaded.

- `attn_implementation`: the attention kernel during training only. On CPU, with facts of ~10
  tokens, PyTorch's fused SDPA kernel (the models' default) costs more than the plain matrix
  products of `eager`.
- `keep_memory` (keep_freed_memory): glibc returns each step's large freed buffers to the
  system and the next step faults them back in as fresh zeroed pages, a large share of a CPU step;
  keeping them in the process makes each step reuse the last one's memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import ExitStack, contextmanager

# glibc's mallopt parameters (malloc.h) and the values it restores (see keep_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX = 65536
_DYNAMIC_CEILING = 32 * 1024 * 1024  # where glibc's own dynamic mmap threshold stops rising (64-bit)


def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def keep_freed_memory(on: bool = True):
    """While open, freed memory stays in the process: no allocation is served by mmap (which
    returns it on free) and the heap is never trimmed. A no-op without glibc (macOS, musl).

    On exit the heap is trimmed once and the thresholds are left where glibc's own dynamic
    thresholds end up in a long run (mmap for blocks of 32 MiB and more, trim above twice that):
    glibc stops adjusting them for good once mallopt has set them, and the defaults (128 KiB)
    would fault every later buffer of that size in afresh."""
    libc = _glibc() if on else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_CEILING)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _DYNAMIC_CEILING)
        libc.malloc_trim(0)


@contextmanager
def attention(model, implementation: str | None):
    """The model's attention kernel set to `implementation` while open (None: left as loaded)."""
    before = model.config._attn_implementation
    if implementation is None or implementation == before:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


class Speedups:
    """The switches of a SpeedConfig, on for one `train()` until `close()` (the loop's finally).
    `as_loaded()` puts the attention kernel back for an epoch-end callback (evaluation, saving);
    keeping freed memory changes no number and stays on."""

    def __init__(self, model, speed):
        self.model, self.loaded_attention = model, model.config._attn_implementation
        self._stack = ExitStack()
        self._stack.enter_context(keep_freed_memory(speed.keep_memory))
        self._stack.enter_context(attention(model, speed.attn_implementation))

    def as_loaded(self):
        return attention(self.model, self.loaded_attention)

    def close(self) -> None:
        self._stack.close()
