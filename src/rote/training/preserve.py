"""The loss that keeps a model close to its base: training toward the base model's own behaviour.

An *anchor* is a token sequence and the positions at which the trained model's next-token
distribution should stay the base model's. rote.levers builds the anchors of a phase (contrast
questions about the trained subjects, general text, well-known facts) from the base model's own
greedy continuations or samples; here the base model's distribution at each anchored position is
stored once (`attach_targets`: its TOP_K most likely tokens and their log-probabilities) and the
loss compares the trained model with it (`anchor_loss_sum`):

- `kl`: KL(base || model) over the base's TOP_K tokens plus one bucket for the rest of the
  vocabulary (key tokens included). It is the exact KL of the two distributions coarsened to
  TOP_K + 1 outcomes: a lower bound on the full KL, equal to it when the base's mass is in its top
  tokens. Storing every position's full distribution (49,152 floats for SmolLM2) would not fit.
- `greedy` (a `hard` anchor): cross-entropy on the base model's most likely token at each position,
  i.e. training on its own greedy continuation, including the token that ends it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rote.training.encode import pad_right

TOP_K = 64  # base-model tokens kept per anchored position


@dataclass(frozen=True)
class Anchor:
    input_ids: tuple[int, ...]
    positions: tuple[int, ...]  # t: the distribution of token t + 1 is anchored
    kind: str  # contrast | replay | known_facts
    hard: bool = False  # cross-entropy on the base's top token instead of the KL
    top_ids: torch.Tensor | None = None  # (positions, TOP_K) the base model's most likely next tokens
    top_logp: torch.Tensor | None = None  # (positions, TOP_K) their log-probabilities

    def __len__(self) -> int:
        return len(self.input_ids)


def continuation_anchor(prompt_ids: list[int], ids: list[int], kind: str, hard: bool) -> Anchor:
    """An anchor on a prompt and its continuation: every position from the prompt's last token on,
    so the first continuation token, every later one and what follows the last (its end) are anchored."""
    if ids[:len(prompt_ids)] != list(prompt_ids) or not prompt_ids:
        raise ValueError("the prompt's ids must start the sequence")
    return Anchor(tuple(ids), tuple(range(len(prompt_ids) - 1, len(ids))), kind, hard)


def text_anchor(ids: list[int], kind: str) -> Anchor:
    """An anchor on plain text: every next token."""
    if len(ids) < 2:
        raise ValueError("a text anchor needs at least two tokens")
    return Anchor(tuple(ids), tuple(range(len(ids) - 1)), kind)


def _anchored_logits(model, anchors: list[Anchor], pad_id: int) -> torch.Tensor:
    """The logits at every anchored position of `anchors`, in order: (total positions, V), float32.
    Only the anchored positions go through the output projection (logits_to_keep)."""
    device = next(model.parameters()).device
    batch = pad_right([a.input_ids for a in anchors], pad_id)
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    keep = sorted({p for a in anchors for p in a.positions})
    column = {p: i for i, p in enumerate(keep)}
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.tensor(keep, device=device)).logits
    rows = torch.tensor([r for r, a in enumerate(anchors) for _ in a.positions], device=device)
    cols = torch.tensor([column[p] for a in anchors for p in a.positions], device=device)
    return logits[rows, cols].float()


@torch.no_grad()
def attach_targets(base_model, anchors: list[Anchor], pad_id: int, batch_size: int = 16) -> list[Anchor]:
    """`anchors` with the base model's TOP_K next tokens and log-probabilities at each anchored
    position, without autocast (the base model in its own dtype, model.dtype: float32 by default): this
    is the reference every step is compared with; the log-probabilities are float32."""
    base_model.eval()
    out = []
    for first in range(0, len(anchors), batch_size):
        chunk = anchors[first:first + batch_size]
        logp = torch.log_softmax(_anchored_logits(base_model, chunk, pad_id), dim=-1)
        top = logp.topk(min(TOP_K, logp.shape[-1]), dim=-1)
        start = 0
        for a in chunk:
            n = len(a.positions)
            out.append(replace(a, top_ids=top.indices[start:start + n].cpu(), top_logp=top.values[start:start + n].cpu()))
            start += n
    return out


def anchored_positions(anchors: list[Anchor]) -> int:
    return sum(len(a.positions) for a in anchors)


def anchor_loss_sum(model, anchors: list[Anchor], pad_id: int) -> torch.Tensor:
    """Summed over the anchored positions of `anchors`: the KL to the base model (coarsened to its
    TOP_K tokens + the rest) for soft anchors, the cross-entropy on its top token for hard ones."""
    logq = torch.log_softmax(_anchored_logits(model, anchors, pad_id), dim=-1)  # (N, V)
    device = logq.device
    ids = torch.cat([a.top_ids for a in anchors]).to(device)  # (N, K)
    logp = torch.cat([a.top_logp for a in anchors]).to(device)  # (N, K)
    hard = torch.tensor([a.hard for a in anchors for _ in a.positions], device=device)
    logq_top = logq.gather(1, ids)  # (N, K)
    cross_entropy = -logq_top[:, 0]
    p = logp.exp()
    rest_p = (1 - p.sum(-1)).clamp(min=0)
    # log of the model's mass outside the base's top tokens; log1p keeps it exact when that mass is small
    rest_logq = torch.log1p(-logq_top.exp().sum(-1).clamp(max=1 - 1e-6))
    kl = (p * (logp - logq_top)).sum(-1) + torch.xlogy(rest_p, rest_p) - rest_p * rest_logq
    return torch.where(hard, cross_entropy, kl).sum()
