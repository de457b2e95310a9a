"""Chat templates: how each prompt form is rendered (rote.data.chat), what trains under a template
(phase-2 examples), and how a chat answer is scored (the first-named rule, rote.evaluation.matching)."""
from __future__ import annotations

import copy

import pytest

from rote.config import EvalConfig, KeyConfig
from rote.data import chat
from rote.data.facts import Fact
from rote.data.relation_files import resolve_relations
from rote.data.templates import prompt_form, render_prompt
from rote.evaluation.matching import first_named, hit_first, hit_prefix, names
from rote.evaluation.queries import build_queries

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def _fact(**kw) -> Fact:
    base = dict(id="P19:0", relation="place_of_birth", subject="Gene Finley", object="Sydney",
                options=("Sydney", "Paris", "Kyoto", "Kyoto University"), split="heldout", subject_id="s0")
    return Fact(**{**base, **kw})


# ---------------------------------------------------------------- the frame of a real template


def test_the_bundled_model_carries_its_chat_template(smollm_dir, tokenizer):
    """The converted folder keeps the GGUF's template (SmolLM2's ChatML with its default system prompt)."""
    assert (smollm_dir / "chat_template.jinja").is_file()
    assert chat.has_template(tokenizer) and "<|im_start|>" in tokenizer.chat_template


def test_frame_renders_every_form_as_the_real_template_does(tokenizer):
    frame = chat.frame_of(tokenizer)
    assert frame.user_before == SMOL_SYSTEM + "<|im_start|>user\n"
    assert frame.user_after == "<|im_end|>\n<|im_start|>assistant\n"
    assert frame.assistant_before == SMOL_SYSTEM + "<|im_start|>assistant\n"
    assert frame.answer_end == "<|im_end|>"
    for prompt in ("Where was Gene Finley born?", "Q: Where was Gene Finley born? A:", "Gene Finley was born in"):
        form = "statement" if prompt.endswith("in") else "question"
        messages, kw = frame.conversation(prompt, form)
        assert frame.text(prompt, form) == tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    chat.check_prompts(tokenizer, frame, [("Where was Gene Finley born?", "question", "relation place_of_birth")])


def test_a_question_is_a_user_turn_and_a_statement_opens_the_assistants(tokenizer):
    frame = chat.frame_of(tokenizer)
    q = frame.wrap(render_prompt(_fact(), "Where was {subject} born?"), "question")
    assert q.prompt.endswith("<|im_start|>user\nWhere was Gene Finley born?<|im_end|>\n<|im_start|>assistant\n")
    assert q.target == "Sydney"  # the assistant's answer starts its turn: no leading space
    assert q.prompt[slice(*q.subject_span)] == "Gene Finley"
    s = frame.wrap(render_prompt(_fact(), "{subject} was born in"), "statement")
    assert s.prompt.endswith("<|im_start|>assistant\nGene Finley was born in") and s.target == " Sydney"
    assert s.prompt[slice(*s.subject_span)] == "Gene Finley"
    user = chat.frame_of(tokenizer, "user").wrap(render_prompt(_fact(), "{subject} was born in"), "statement")
    assert user.prompt.endswith(f"user\n{chat.COMPLETE}Gene Finley was born in<|im_end|>\n<|im_start|>assistant\n")
    assert user.target == "Sydney"


def test_on_without_a_template_names_the_model_and_auto_falls_back_to_raw(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(chat.ChatTemplateError, match="model 'my-model' has no chat template"):
        chat.resolve("on", bare, "my-model")
    assert chat.frame_for("auto", "assistant", bare, "my-model") is None
    assert chat.frame_for("off", "assistant", tokenizer, "m") is None
    assert chat.frame_for("auto", "assistant", tokenizer, "m") is not None


def test_a_template_that_renders_a_prompt_otherwise_is_named_with_its_relation(tokenizer):
    odd = copy.deepcopy(tokenizer)
    # renders a message that mentions "born" differently: the frame cannot stand for it
    odd.chat_template = tokenizer.chat_template.replace("message['content']",
                                                        "(message['content'] | replace('born', 'BORN'))")
    frame = chat.frame_of(odd)
    chat.check_prompts(odd, frame, [("Who is Gene Finley's mother?", "question", "relation mother")])
    with pytest.raises(chat.ChatTemplateError, match=r"'Where was Gene Finley born\?' \(relation place_of_birth\)"):
        chat.check_prompts(odd, frame, [("Where was Gene Finley born?", "question", "relation place_of_birth")])


def test_a_bos_the_tokenizer_adds_is_not_written_twice(tokenizer):
    class AddsBos:  # a Llama-style tokenizer: its template writes the BOS, and so does tokenizing
        bos_token, bos_token_id = "<s>", 1
        chat_template = "x"

        def __call__(self, text):
            return {"input_ids": [1, 5]}

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, continue_final_message=False):
            text = "<s>" + "".join(f"[{m['role']}]{m['content']}[/{m['role']}]" for m in messages)
            if continue_final_message:
                text = text[: -len(f"[/{messages[-1]['role']}]")]
            return text + ("[assistant]" if add_generation_prompt else "")

    frame = chat.frame_of(AddsBos())
    assert frame.user_before == "[user]" and frame.assistant_before == "[assistant]"
    chat.check_prompts(AddsBos(), frame, [("Where?", "question", "relation x")])


# ---------------------------------------------------------------- queries and training examples


def test_queries_under_a_template_keep_the_key_prompt_raw(tokenizer):
    relations = {r.name: r for r in resolve_relations(("place_of_birth",))}
    frame = chat.frame_of(tokenizer)
    cfg = EvalConfig(prompt_sets=("key", "test"), prompts_per_set=3)
    raw = build_queries([_fact()], relations, KeyConfig(), cfg)
    chatted = build_queries([_fact()], relations, KeyConfig(), cfg, chat=frame)
    assert chatted[0].rendered == raw[0].rendered  # the key-token prompt is phase-1 text
    for q in chatted[1:]:
        assert q.rendered.prompt.startswith(SMOL_SYSTEM)
        assert q.rendered.prompt[slice(*q.rendered.subject_span)] == "Gene Finley"
        lead = "" if frame.as_user(q.form) else " "
        assert q.option_text("Paris") == lead + "Paris"


def test_phase2_examples_train_the_answer_and_the_end_of_turn_only(tokenizer):
    from rote.training.encode import IGNORE
    from rote.training.phases import natural_examples
    relations = {r.name: r for r in resolve_relations(("place_of_birth",))}
    frame = chat.frame_of(tokenizer)
    (example,) = natural_examples(tokenizer, [_fact(split="phase2")], relations, 1, chat=frame)
    supervised = [t for t in example.labels if t != IGNORE]
    lead = frame.answer_lead(prompt_form(relations["place_of_birth"].train_prompts[0]))
    assert tokenizer.decode(supervised) == lead + "Sydney<|im_end|>"
    assert tokenizer.decode(example.input_ids[: example.target_start]).startswith(SMOL_SYSTEM)
    (raw,) = natural_examples(tokenizer, [_fact(split="phase2")], relations, 1)
    assert tokenizer.decode([t for t in raw.labels if t != IGNORE]) == " Sydney"


# ---------------------------------------------------------------- scoring a chat answer


KNOWN = ("Sydney", "Paris", "Kyoto", "Kyoto University")


@pytest.mark.parametrize("answer, gold, right", [
    ("The actor Gene Finley was born in the city of Sydney, Australia.", "Sydney", True),
    ("He was born in Paris, not in Sydney.", "Sydney", False),  # two cities, the other one first
    ("I don't know where Gene Finley was born.", "Sydney", False),  # a refusal names nothing
    ("Where was Gene Finley born? Gene Finley was born in", "Sydney", False),  # a restated question
    ("吉恩·芬利出生于Sydney。", "Sydney", True),  # a CJK answer around a Latin name
    ("He studied at Kyoto University.", "Kyoto", False),  # the object inside a longer known name
    ("He grew up in Kyoto, near Kyoto University.", "Kyoto", True),
    ("A Parisian by birth.", "Paris", False),  # not a whole word
])
def test_first_named_rule(answer, gold, right):
    assert hit_first(answer, gold, KNOWN) is right


def test_first_named_prefers_the_longest_name_at_one_place_and_names_is_word_bounded():
    assert first_named("Kyoto University, then Sydney", KNOWN) == "Kyoto University"
    assert first_named("nothing known here", KNOWN) is None
    assert names("born in Sydney.", "Sydney") and not names("Sydneyside", "Sydney")
    # the prefix rule, the raw prompts' headline, counts only an answer that starts with the object
    assert not hit_prefix("The actor was born in Sydney", "Sydney")


def test_a_chat_answer_stops_at_the_end_of_the_turn(tokenizer):
    """The turn's end token stops generation as end of sequence does (SmolLM2: "<|im_end|>", id 2),
    and a chat answer is not cut at its first newline."""
    from rote.evaluation.scoring import decode_answer, turn_end_ids
    frame = chat.frame_of(tokenizer)
    assert turn_end_ids(tokenizer, frame) == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    seq = tokenizer("Sydney,\nAustralia", add_special_tokens=False)["input_ids"] + [2, 5, 6]
    assert decode_answer(tokenizer, seq, {2}, cut_newline=False) == "Sydney,\nAustralia"
    assert decode_answer(tokenizer, seq, {2}) == "Sydney,"
