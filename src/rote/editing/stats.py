"""The statistics the editors protect what the model knows with.

- `second_moment`: E[k k^T] of a layer's keys (the down-projection's inputs) over every token of
  general text: rote/data/replay.txt, the levers' replay text (never the perplexity paragraphs or
  the locality probes, which measure the damage), in 64-token windows, up to `max_tokens` tokens.
  MEMIT and ROME weigh an update against it (the papers use Wikipedia text; this is the offline
  stand-in, and the count is a setting: edit.mom2_tokens).
- `null_space`: AlphaEdit's projector onto the directions the preserved keys barely use: the
  eigenvectors of the second moment whose eigenvalue is below `threshold` (the reference code's
  2e-2), so an update projected by it leaves those keys' outputs (nearly) unchanged.
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from rote.editing.locate import down_proj, hooked

WINDOW = 64  # tokens per window of general text


def general_text_windows(tokenizer, max_tokens: int) -> list[list[int]]:
    from importlib import resources
    text = (resources.files("rote.data") / "replay.txt").read_text(encoding="utf-8")
    body = " ".join(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    ids = tokenizer(body, add_special_tokens=False)["input_ids"][:max_tokens]
    return [ids[i:i + WINDOW] for i in range(0, len(ids), WINDOW) if len(ids[i:i + WINDOW]) > 1]


@torch.no_grad()
def second_moment(model, tokenizer, layers: list[int], max_tokens: int, batch_size: int = 16) -> dict[int, torch.Tensor]:
    """layer -> (d_in, d_in) float32 mean of k k^T over the general text's tokens."""
    device = next(model.parameters()).device
    windows = general_text_windows(tokenizer, max_tokens)
    sums = {layer: None for layer in layers}
    count = 0
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        width = max(len(w) for w in batch)
        ids = torch.tensor([w + [w[-1]] * (width - len(w)) for w in batch], device=device)
        mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in batch], device=device)
        seen = {}
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(hooked(down_proj(model, layer), True,
                                           lambda m, a, layer=layer: seen.__setitem__(layer, a[0])))
            model(input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        for layer in layers:
            keys = seen[layer][keep].float()  # (tokens, d_in)
            part = keys.T @ keys
            sums[layer] = part if sums[layer] is None else sums[layer] + part
        count += int(keep.sum())
    return {layer: s / max(count, 1) for layer, s in sums.items()}


def null_space(moment: torch.Tensor, threshold: float) -> torch.Tensor:
    """(d_in, d_in) projector onto the eigenvectors of `moment` with eigenvalue below `threshold`."""
    values, vectors = torch.linalg.eigh(moment.double())
    small = vectors[:, values < threshold]
    return (small @ small.T).float()
