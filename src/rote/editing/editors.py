"""ROME, MEMIT and AlphaEdit: the target values and the three closed-form updates.

Target values (ROME section 3, MEMIT section 4.2): for each request, a shift `delta` of the residual
stream after the last edited layer, at the subject's last token, optimized with Adam so that the
model generates the target (mean negative log-likelihood of its tokens) while the distribution after
"{subject} is a" stays near the unedited model's (KL, weight `kl_factor`), with a weight decay on
`delta` and its norm clamped to `clamp_norm` times the layer output's. The target value is the
layer output plus `delta`.

Updates of a layer's down-projection W (d_out x d_in) for keys K (n x d_in, rows) and residuals R
(n x d_out), with C the keys' second moment over general text (rote.editing.stats):
- ROME (one layer, one request at a time, arXiv 2202.05262 eq. 2): W += r (C^-1 k)^T / (k^T C^-1 k);
- MEMIT (arXiv 2210.07229 eq. 14, spread over the layers): W += R^T K (lambda C + K^T K)^-1, the
  residual of the last layer's target divided among the layers still to edit;
- AlphaEdit (arXiv 2410.02355 eq. 15, as its reference code solves it): W^T += (P K^T K + l2 I)^-1 P K^T R,
  the residuals spread as MEMIT's, with P the null-space projector of C (rote.editing.stats), so the
  update leaves the keys C was measured on (nearly) where they were.
Keys are read at the prompt itself (the papers also average over random prefixes; not here).
"""
from __future__ import annotations

import dataclasses
import time

import torch

from rote.editing.locate import Request, decoder_layers, down_proj, edited_layers, read_at, shifted_output, subject_last
from rote.editing.stats import null_space, second_moment
from rote.training.encode import encode

EDITORS = ("rome", "memit", "alphaedit")


def target_shift(model, tokenizer, request: Request, layer: int, cfg) -> torch.Tensor:
    """(d,) the shift of the residual stream after `layer` at the subject's last token that makes the
    model produce `request.target` (module docstring)."""
    device = next(model.parameters()).device
    enc = encode(tokenizer, request.prompt, request.target)
    ids = torch.tensor([enc.input_ids], device=device)
    targets = ids[0, enc.target_start:enc.target_end]
    position = torch.tensor([subject_last(tokenizer, request)], device=device)
    subject = request.prompt[request.subject_span[0]:request.subject_span[1]]
    essence = torch.tensor([tokenizer(f"{subject} is a")["input_ids"]], device=device)
    essence_subject = torch.tensor([subject_last(tokenizer, Request(f"{subject} is a", (0, len(subject)), " x"))],
                                   device=device)
    with torch.no_grad():
        before = torch.log_softmax(model(input_ids=essence).logits[0, -1].float(), dim=-1)
        norm = read_at(model, tokenizer, [request], layer, "output")[0].norm()
    delta = torch.zeros(model.config.hidden_size, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=cfg.v_lr)
    for _ in range(cfg.v_steps):
        optimizer.zero_grad()
        with shifted_output(model, layer, position, delta[None]):
            logits = model(input_ids=ids).logits[0, enc.target_start - 1:enc.target_end - 1].float()
        nll = torch.nn.functional.cross_entropy(logits, targets)
        with shifted_output(model, layer, essence_subject, delta[None]):
            after = torch.log_softmax(model(input_ids=essence).logits[0, -1].float(), dim=-1)
        kl = torch.nn.functional.kl_div(after, before, log_target=True, reduction="sum")
        loss = nll + cfg.kl_factor * kl + cfg.v_weight_decay * (delta.norm() / norm) ** 2
        if nll.item() < 5e-2:
            break
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the shift stays within clamp_norm x the layer output's norm
            limit = cfg.clamp_norm * norm
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    return delta.detach()


def _rome(model, tokenizer, requests: list[Request], cfg, moments) -> None:
    layer = cfg.rome_layer
    inverse = torch.linalg.inv(moments[layer].double() + 1e-6 * torch.eye(moments[layer].shape[0], dtype=torch.double))
    weight = down_proj(model, layer).weight
    for request in requests:  # one rank-one edit after another, each on the model the last one left
        key = read_at(model, tokenizer, [request], layer, "key")[0].double()
        shift = target_shift(model, tokenizer, request, layer, cfg).double()
        u = inverse.to(key.device) @ key
        with torch.no_grad():
            weight += (torch.outer(shift, u) / (u @ key)).to(weight.dtype)


def _spread(model, tokenizer, requests: list[Request], cfg, moments, projectors=None) -> None:
    """MEMIT (projectors None) or AlphaEdit: the last layer's targets, spread over cfg.layers."""
    layers = list(cfg.layers)
    last = layers[-1]
    shifts = torch.stack([target_shift(model, tokenizer, r, last, cfg) for r in requests])
    targets = read_at(model, tokenizer, requests, last, "output") + shifts
    for i, layer in enumerate(layers):
        keys = read_at(model, tokenizer, requests, layer, "key").double()  # (n, d_in)
        now = read_at(model, tokenizer, requests, last, "output")
        residual = ((targets - now) / (len(layers) - i)).double()  # (n, d_out)
        if projectors is None:
            a = cfg.mom2_weight * moments[layer].double().to(keys.device) + keys.T @ keys
            update = torch.linalg.solve(a, keys.T @ residual)  # (d_in, d_out)
        else:
            p = projectors[layer].double().to(keys.device)
            eye = torch.eye(p.shape[0], dtype=torch.double, device=keys.device)
            update = torch.linalg.solve(p @ (keys.T @ keys) + cfg.l2 * eye, p @ keys.T @ residual)
        weight = down_proj(model, layer).weight
        with torch.no_grad():
            weight += update.T.to(weight.dtype)


def edit(model, tokenizer, requests: list[Request], editor: str, cfg) -> dict:
    """Apply `editor` (EDITORS) to `model` in place for `requests`; returns the phase summary."""
    if editor not in EDITORS:
        raise ValueError(f"unknown editor {editor!r} (known: {', '.join(EDITORS)})")
    started = time.perf_counter()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    count = len(decoder_layers(model))
    cfg = dataclasses.replace(cfg, rome_layer=cfg.rome_layer % count, layers=tuple(sorted(x % count for x in cfg.layers)))
    layers = edited_layers(editor, cfg)
    moments = second_moment(model, tokenizer, layers, cfg.mom2_tokens)
    if editor == "rome":
        _rome(model, tokenizer, requests, cfg, moments)
    elif editor == "memit":
        _spread(model, tokenizer, requests, cfg, moments)
    else:
        _spread(model, tokenizer, requests, cfg, moments,
                {layer: null_space(m, cfg.nullspace_threshold) for layer, m in moments.items()})
    return {"editor": editor, "requests": len(requests), "layers": layers, "epochs": 0, "steps": 0,
            "supervised_tokens": 0, "seconds": round(time.perf_counter() - started, 2)}
