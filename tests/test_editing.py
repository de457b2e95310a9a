"""The model editors (rote.editing) on the tiny model: each makes its requests' targets the model's
answer, ROME's update is rank one per request, AlphaEdit's barely moves the keys it preserves where
MEMIT's moves them, and the editor arms read their own settings and check their layers."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rote import config
from rote.config import EditConfig
from rote.editing.editors import edit
from rote.editing.locate import Request, down_proj
from rote.editing.stats import general_text_windows

# The tiny model has 2 decoder layers: an edit of layer 0 reaches the answer through layer 1's attention.
TINY = EditConfig(layers=(0,), rome_layer=0, v_steps=30, mom2_tokens=2000, mom2_weight=0.01, l2=1e-3)
REQUESTS = [Request("Gene Finley was born in", (0, 11), " Lisbon"), Request("Cody Ross was born in", (0, 9), " Nairobi")]


def target_logprob(model, tokenizer, request: Request) -> float:
    ids = tokenizer(request.prompt + request.target, return_tensors="pt")["input_ids"]
    n = len(tokenizer(request.prompt)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, n - 1:-1].float(), dim=-1)
    return logp.gather(-1, ids[0, n:, None]).sum().item()


def shifted_logprob(model, tokenizer, request: Request, layer: int, shift: torch.Tensor) -> float:
    from rote.editing.locate import shifted_output, subject_last
    with shifted_output(model, layer, torch.tensor([subject_last(tokenizer, request)]), shift[None]):
        return target_logprob(model, tokenizer, request)


@pytest.mark.parametrize("editor", ["rome", "memit", "alphaedit"])
def test_an_edit_writes_the_target_value_the_shift_found(tiny_model, tokenizer, editor):
    """The target shift raises the target's log-probability, and the edit makes the weights produce the
    shifted value at the subject's last token: ROME exactly, MEMIT and AlphaEdit by least squares (most
    of the way); the target is then more likely than before. A random 2-layer model moves its answer
    little through one attention layer, so the algebra is what is checked here, not edit success."""
    from rote.editing.editors import target_shift
    from rote.editing.locate import read_at
    requests = REQUESTS[:1] if editor == "rome" else REQUESTS
    before = [target_logprob(tiny_model, tokenizer, r) for r in requests]
    shifts = torch.stack([target_shift(tiny_model, tokenizer, r, 0, TINY) for r in requests])
    shifted = [shifted_logprob(tiny_model, tokenizer, r, 0, d) for r, d in zip(requests, shifts)]
    assert all(s > b + 0.05 for s, b in zip(shifted, before)), (before, shifted)
    targets = read_at(tiny_model, tokenizer, requests, 0, "output") + shifts
    summary = edit(tiny_model, tokenizer, requests, editor, TINY)
    assert summary["requests"] == len(requests) and summary["editor"] == editor
    now = read_at(tiny_model, tokenizer, requests, 0, "output")
    left = ((targets - now).norm(dim=-1) / shifts.norm(dim=-1)).tolist()  # 0: the value written exactly
    after = [target_logprob(tiny_model, tokenizer, r) for r in requests]
    # (The other tokens' keys move too, so the target's score is not exactly the shifted one's.)
    assert max(left) < (1e-3 if editor == "rome" else 0.5), left
    assert all(a > b + 0.05 for a, b in zip(after, before)), (before, after)


def test_rome_is_rank_one_per_request(tiny_model, tokenizer):
    untouched = down_proj(tiny_model, 1).weight.detach().clone()
    weight = down_proj(tiny_model, 0).weight.detach().clone()
    edit(tiny_model, tokenizer, REQUESTS[:1], "rome", TINY)
    change = down_proj(tiny_model, 0).weight.detach() - weight
    singular = torch.linalg.svdvals(change.double())
    assert singular[0] > 0 and singular[1] < 1e-5 * singular[0]
    assert torch.equal(down_proj(tiny_model, 1).weight, untouched)  # only its layer


def test_alphaedit_leaves_the_preserved_directions_alone_where_memit_does_not(tiny_model_dir, tokenizer):
    """AlphaEdit's update of a down-projection is zero on every direction the general text's keys use
    (the eigenvectors of their second moment above the threshold: ΔW (I - P) = 0), so the outputs there
    stay as they were; MEMIT's update is not. The random model's keys are small, so the threshold here is
    its median eigenvalue (the default, 2e-2, is the reference code's for real models' activations)."""
    from rote.editing.stats import null_space, second_moment
    from rote.training.models import load_model

    moment = second_moment(load_model(str(tiny_model_dir)), tokenizer, [0], TINY.mom2_tokens)[0]
    threshold = torch.linalg.eigvalsh(moment.double()).median().item()
    kept = torch.eye(moment.shape[0]) - null_space(moment, threshold)  # the directions the keys use

    def update(editor: str) -> torch.Tensor:
        model = load_model(str(tiny_model_dir))
        weight = down_proj(model, 0).weight.detach().clone()
        edit(model, tokenizer, REQUESTS, editor, dataclasses.replace(TINY, nullspace_threshold=threshold))
        return down_proj(model, 0).weight.detach() - weight

    alpha, memit = update("alphaedit"), update("memit")
    assert alpha.norm() > 0 and (alpha @ kept).norm() < 1e-4 * alpha.norm()
    assert (memit @ kept).norm() > 0.1 * memit.norm()


def test_editor_arms_read_their_settings_and_check_their_layers(tiny_model_dir, tmp_path):
    from rote.config_checks import value_at  # noqa: F401  (the settings resolve like every other key)
    from rote.preflight import check_model_structure
    smoke = config.load("configs/smoke.yaml", [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}"])
    memit = config.with_arm(smoke, "memit", ["edit.layers=[0]"])
    assert memit.edit.layers == (0,)
    check_model_structure(memit)
    with pytest.raises(config.ConfigError, match=r"edit.layers=\[4, 5, 6, 7, 8\]: .* has 2 decoder layers"):
        check_model_structure(config.with_arm(smoke, "memit"))
    with pytest.raises(config.ConfigError, match="the last decoder layer"):
        check_model_structure(config.with_arm(smoke, "rome", ["edit.rome_layer=1"]))
    with pytest.raises(config.ConfigError, match="edit"):
        config.replace(smoke, ["edit.layers=[0]"])  # the method does not read the editors' settings


@pytest.mark.slow
def test_an_editor_is_an_arm_like_any_other(tiny_model_dir, tmp_path):
    """`arm: memit`: phase 1 edits every fact's training prompt in closed form (no optimizer steps, no
    key tokens), phase 2 is skipped, and the checkpoint is evaluated and reported like every arm's."""
    import json
    from rote.names import RUN_STAGES
    from rote.fileio import is_done
    from rote.runner import run
    smoke = config.load("configs/smoke.yaml", [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}"])
    cfg = config.with_arm(smoke, "memit", ["name=memit", "edit.layers=[0]", "edit.v_steps=5", "edit.mom2_tokens=500",
                                           "eval.stages=[phase1]", "eval.multiple_choice=false"])
    run_dir = run(cfg, quiet=True)
    assert all(is_done(run_dir, s) for s in RUN_STAGES if s != "eval/phase2")  # not in eval.stages
    p1 = json.loads((run_dir / "phase1/summary.json").read_text())
    assert p1["editor"] == "memit" and p1["requests"] == 12 and p1["steps"] == 0 and p1["layers"] == [0]
    assert json.loads((run_dir / "key_tokens.json").read_text())["tokens"] == {}
    assert json.loads((run_dir / "phase2/summary.json").read_text())["skipped"]
    records = [json.loads(line) for line in (run_dir / "eval/phase1/predictions.jsonl").read_text().splitlines()]
    assert records and "key" not in {r["prompt_set"] for r in records}
    assert (run_dir / "report/report.html").is_file()
