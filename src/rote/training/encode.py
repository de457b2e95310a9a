"""Token ids and labels for one example, and padding into batches.

The supervision mask is built here, once; collators only pad. Training and scoring call the
same `encode`, so what is trained is exactly what is scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100
MASKS = ("object", "subject_object", "all")


class EncodingError(ValueError):
    """An example that cannot be encoded faithfully; the message shows the text."""


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE outside the supervised span
    target_start: int  # index of the first target token (= number of prompt tokens)
    target_end: int  # one past the last target token (before any appended EOS)

    def __len__(self) -> int:
        return len(self.input_ids)


def token_span(offsets: list[tuple[int, int]], char_span: tuple[int, int]) -> tuple[int, int]:
    """Token indices [start, end) of the tokens overlapping a character span."""
    a, b = char_span
    hit = [i for i, (s, e) in enumerate(offsets) if e > s and s < b and e > a]
    if not hit:
        raise EncodingError(f"no token covers characters {char_span}")
    return hit[0], hit[-1] + 1


def encode(
    tokenizer,
    prompt: str,
    target: str,
    mask: str = "object",
    subject_span: tuple[int, int] | None = None,
    append_eos: bool = False,
) -> Encoded:
    """Encode `prompt + target`; labels follow `mask`:
    - object: the target tokens (and the EOS, when appended);
    - subject_object: those plus the subject's tokens (needs `subject_span`, characters in prompt);
    - all: every token.
    The prompt's ids must be a prefix of the whole's, else the target would be mis-located."""
    if mask not in MASKS:
        raise EncodingError(f"unknown loss mask {mask!r} (use one of {MASKS})")
    if not target:
        raise EncodingError(f"empty target for prompt {prompt!r}")
    prompt_ids = tokenizer(prompt)["input_ids"]
    whole = tokenizer(prompt + target, return_offsets_mapping=mask == "subject_object")
    ids = list(whole["input_ids"])
    n = len(prompt_ids)
    if ids[:n] != list(prompt_ids) or len(ids) == n:
        raise EncodingError(
            f"prompt {prompt!r} does not tokenize as a prefix of prompt+target {prompt + target!r}: "
            f"{prompt_ids} vs {ids}"
        )
    end = len(ids)
    if append_eos:
        if tokenizer.eos_token_id is None:
            raise EncodingError("append_eos needs a tokenizer with an eos token")
        ids.append(tokenizer.eos_token_id)
    labels = [IGNORE] * len(ids)
    supervised = set(range(n, len(ids)))
    if mask == "all":
        supervised = set(range(len(ids)))
    elif mask == "subject_object":
        if subject_span is None:
            raise EncodingError(f"loss mask subject_object needs the subject's span in {prompt!r}")
        s, e = token_span(whole["offset_mapping"], subject_span)
        supervised |= set(range(s, e))
    for i in supervised:
        labels[i] = ids[i]
    # Position 0 predicts nothing (no token before it): a label there would be dropped silently.
    labels[0] = IGNORE
    if all(label == IGNORE for label in labels):
        raise EncodingError(f"example {prompt + target!r} has no supervised token")
    return Encoded(tuple(ids), tuple(labels), n, end)


def pad_right(sequences: list[list[int]] | list[tuple[int, ...]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding (training, scoring, the anchors of rote.training.preserve): input_ids and
    attention_mask, each (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.tensor(s)
        attn[row, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": attn}


def pad_batch(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding of encoded examples: input_ids, attention_mask, labels, each (B, T)."""
    out = pad_right([e.input_ids for e in examples], pad_id)
    out["labels"] = pad_right([e.labels for e in examples], IGNORE)["input_ids"]
    return out


def pad_left(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left padding (generation), so every row's next token comes at the last position: (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        if s:
            ids[row, width - len(s):] = torch.tensor(s)
            attn[row, width - len(s):] = 1
    return {"input_ids": ids, "attention_mask": attn}
