"""Encoding and loss masks, with exact ids on the real SmolLM2 tokenizer."""
import pytest
import torch
import torch.nn.functional as F

from rote.training.encode import IGNORE, EncodingError, encode, pad_batch, pad_left
from rote.training.loop import supervised_loss_sum
from rote.training.models import load_tokenizer

# "Gene Finley <rote:P19> Paris" on SmolLM2: Gene, ĠFin, ley, Ġ, <rote:P19>, ĠParis
GENE, FIN, LEY, SPACE, PARIS = 33003, 6527, 2292, 216, 7042


@pytest.fixture(scope="module")
def tok(smollm_dir):
    t = load_tokenizer(str(smollm_dir))
    t.add_tokens(["<rote:P19>"], special_tokens=True)
    return t


@pytest.fixture(scope="module")
def key(tok):
    return tok.convert_tokens_to_ids("<rote:P19>")


def test_object_mask_exact(tok, key):
    e = encode(tok, "Gene Finley <rote:P19>", " Paris", mask="object")
    assert e.input_ids == (GENE, FIN, LEY, SPACE, key, PARIS)
    assert e.labels == (IGNORE,) * 5 + (PARIS,)
    assert (e.target_start, e.target_end) == (5, 6)


def test_subject_object_mask_exact(tok, key):
    e = encode(tok, "Gene Finley <rote:P19>", " Paris", mask="subject_object", subject_span=(0, 11))
    # The first token predicts nothing (no token before it), so it carries no label.
    assert e.labels == (IGNORE, FIN, LEY, IGNORE, IGNORE, PARIS)


def test_all_mask_and_eos(tok, key):
    e = encode(tok, "Gene Finley <rote:P19>", " Paris", mask="all", append_eos=True)
    eos = tok.eos_token_id
    assert e.input_ids == (GENE, FIN, LEY, SPACE, key, PARIS, eos)
    assert e.labels == (IGNORE, FIN, LEY, SPACE, key, PARIS, eos)
    assert e.target_end == 6


def test_subject_mid_sentence(tok):
    prompt = "Where was Gene Finley born?"
    e = encode(tok, prompt, " Paris", mask="subject_object", subject_span=(10, 21))
    supervised = [i for i, x in enumerate(e.labels) if x != IGNORE]
    assert [tok.decode([e.input_ids[i]]) for i in supervised] == [" Gene", " Fin", "ley", " Paris"]


def test_prompt_must_be_prefix(tok):
    with pytest.raises(EncodingError, match="does not tokenize as a prefix"):
        encode(tok, "Par", "is")  # "Paris" is one token: the prompt's ids are not a prefix


def test_errors_are_clear(tok):
    with pytest.raises(EncodingError, match="unknown loss mask 'objects'"):
        encode(tok, "a", " b", mask="objects")
    with pytest.raises(EncodingError, match="needs the subject's span"):
        encode(tok, "a", " b", mask="subject_object")
    with pytest.raises(EncodingError, match="empty target"):
        encode(tok, "a", "")


def test_right_and_left_padding():
    a = encode.__globals__["Encoded"]((1, 2, 3), (IGNORE, IGNORE, 3), 2, 3)
    b = encode.__globals__["Encoded"]((4, 5), (IGNORE, 5), 1, 2)
    batch = pad_batch([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 3], [IGNORE, 5, IGNORE]]
    left = pad_left([[1, 2, 3], [4]], pad_id=0)
    assert left["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("mask, expected_positions", [
    ("object", [5]), ("subject_object", [1, 2, 5]), ("all", [1, 2, 3, 4, 5]),
])
def test_loss_counts_exactly_the_supervised_tokens(tok, tiny_model, mask, expected_positions):
    """The collator keeps the mask, and the loss is the cross-entropy at exactly the masked-in
    positions: tokens outside the span (whose per-token loss is far from zero) add nothing."""
    model = tiny_model
    model.resize_token_embeddings(len(tok))
    e = encode(tok, "Gene Finley <rote:P19>", " Paris", mask=mask, subject_span=(0, 11))
    batch = pad_batch([e], pad_id=tok.pad_token_id)
    assert batch["labels"][0].tolist() == list(e.labels)  # padding never rewrites labels
    with torch.no_grad():
        loss = supervised_loss_sum(model, batch)
        logits = model(input_ids=batch["input_ids"]).logits[0].float()
    ids = batch["input_ids"][0]
    per_token = F.cross_entropy(logits[:-1], ids[1:], reduction="none")  # per_token[t-1] is token t's loss
    assert [t for t in range(1, len(ids)) if batch["labels"][0, t] != IGNORE] == expected_positions
    expected = sum(per_token[t - 1] for t in expected_positions)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    excluded = [t for t in range(1, len(ids)) if t not in expected_positions]
    if excluded:  # the masked-out tokens would have changed the loss had they counted
        assert min(per_token[t - 1].item() for t in excluded) > 1.0
