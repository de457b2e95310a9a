"""How a prompt is rendered under a model's chat template: the one place. Pure: no torch.

An Instruct model is used through its chat template, so its answers are measured, and its natural
prompts trained, the way its users ask it (`chat_template: auto | on | off`). The template is reduced
once per tokenizer to a `ChatFrame`, the text around one conversation turn (`frame_of`), and every
prompt is then wrapped by plain string concatenation, so the pure layers (queries, phase-2 examples,
the levers' anchors, the locality probes) render without the tokenizer. `check_prompts` renders every
distinct prompt with the real template too and refuses a template that renders any of them otherwise.

- Question and "Q: ... A:" prompts (and the contrast questions) are a user turn followed by the
  generation prompt: the answer is the assistant's, without a leading space ("Paris").
- Statement prompts ("Gene Finley was born in", a locality probe) open the assistant's turn and are
  continued there (`continue_final_message`), the answer keeping its space (" Paris"): measured on
  the bundled model against a user turn asking to complete them (`STATEMENTS`; LOG.md 2026-12-07).
- Phase 1's key text is not a conversation and stays raw text; so do the perplexity paragraphs and
  the replay text.
- A trained answer ends the assistant's turn (`answer_end`, e.g. "<|im_end|>"), so that the trained
  model stops where a chat model stops.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rote.data.templates import Rendered, prompt_form

CHAT_SETTINGS = ("auto", "on", "off")
# How statement prompts are rendered: `assistant` (continue the assistant's turn) or `user` (a user
# turn asking to complete the sentence). LOG.md 2026-12-07 has the measurement behind the default.
STATEMENTS = ("assistant", "user")
COMPLETE = "Complete the sentence: "  # the user turn's request under statements: user

_SENTINEL = "\x00ROTE-CHAT-{}\x00"


class ChatTemplateError(ValueError):
    """A chat template that cannot be used: absent under `on`, or rendering a prompt otherwise than
    the frame does. The message names the model or the prompt."""


@dataclass(frozen=True)
class ChatFrame:
    """A chat template reduced to the text around one turn."""
    user_before: str  # before a user message: the default system prompt, the user's role header
    user_after: str  # after it, up to where the assistant's answer starts (the generation prompt)
    assistant_before: str  # before an assistant message that opens the conversation
    answer_end: str  # right after an assistant's answer: the end of its turn ("<|im_end|>")
    statements: str = "assistant"

    def as_user(self, form: str) -> bool:
        """Whether a prompt of this form is a user turn (else it opens the assistant's turn)."""
        return form != "statement" or self.statements == "user"

    def request(self, form: str) -> str:
        """What a user turn asks before the prompt: a request to complete a statement, else nothing."""
        return COMPLETE if form == "statement" else ""

    def wrap(self, rendered: Rendered, form: str) -> Rendered:
        """`rendered` as the model sees it under the template: the prompt inside its turn, the
        character spans shifted with it, the target without its leading space in a user turn."""
        if self.as_user(form):
            before = self.user_before + self.request(form)
            prompt, target = before + rendered.prompt + self.user_after, rendered.target.lstrip(" ")
        else:
            before = self.assistant_before
            prompt, target = before + rendered.prompt, rendered.target
        shift = len(before)
        return Rendered(prompt, target, (rendered.subject_span[0] + shift, rendered.subject_span[1] + shift),
                        None if rendered.key_span is None else (rendered.key_span[0] + shift, rendered.key_span[1] + shift))

    def text(self, prompt: str, form: str | None = None) -> str:
        """A bare prompt (a locality probe, a contrast question) as the model sees it; its form from
        its text unless given."""
        return self.wrap(Rendered(prompt, " x", (0, 0)), form or prompt_form(prompt)).prompt

    def answer_lead(self, form: str) -> str:
        """What precedes an answer: nothing at the start of the assistant's turn, a space after a statement."""
        return "" if self.as_user(form) else " "

    def conversation(self, prompt: str, form: str) -> tuple[list[dict], dict]:
        """The messages and apply_chat_template's keyword arguments that render `prompt` as `text` does."""
        if self.as_user(form):
            return [{"role": "user", "content": self.request(form) + prompt}], {"add_generation_prompt": True}
        return [{"role": "assistant", "content": prompt}], {"continue_final_message": True}


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve(setting: str, tokenizer, model: str) -> bool:
    """Whether a run renders under the tokenizer's chat template: `auto` when it has one."""
    if setting not in CHAT_SETTINGS:
        raise ChatTemplateError(f"chat_template={setting!r}: use one of {', '.join(CHAT_SETTINGS)}")
    if setting == "on" and not has_template(tokenizer):
        raise ChatTemplateError(f"chat_template=on but model {model!r} has no chat template in its tokenizer; "
                                f"use chat_template=auto or off")
    return setting == "on" or (setting == "auto" and has_template(tokenizer))


def frame_for(setting: str, statements: str, tokenizer, model: str) -> ChatFrame | None:
    """The frame a run renders with (model.chat_template, model.chat_statements), or None for raw text."""
    return frame_of(tokenizer, statements) if resolve(setting, tokenizer, model) else None


def frame_of(tokenizer, statements: str = "assistant") -> ChatFrame:
    """The tokenizer's chat template reduced to a ChatFrame, by rendering conversations whose
    messages are sentinels and cutting the text around them. A beginning-of-sequence token the
    template writes and the tokenizer adds again is left to the tokenizer (`_render`)."""
    if statements not in STATEMENTS:
        raise ChatTemplateError(f"chat_statements={statements!r}: use one of {', '.join(STATEMENTS)}")
    question, answer = _SENTINEL.format(1), _SENTINEL.format(2)
    asked = _render(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True)
    answered = _render(tokenizer, [{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
    opened = _render(tokenizer, [{"role": "assistant", "content": answer}], continue_final_message=True)
    user_before, user_after = asked.split(question)
    # the end of the assistant's turn: the text after its answer, without the whitespace between turns
    end = answered.split(answer, 1)[1].rstrip()
    return ChatFrame(user_before, user_after, opened.split(answer)[0], end, statements)


def _render(tokenizer, messages: list[dict], **kw) -> str:
    """The template's text, without a beginning-of-sequence token it writes that the tokenizer adds
    again when the text is encoded (it would be doubled)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    ids = tokenizer("a")["input_ids"]
    bos = getattr(tokenizer, "bos_token", None)
    adds_bos = bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)
    return text.removeprefix(bos) if bos and adds_bos else text


def check_prompts(tokenizer, frame: ChatFrame, prompts: list[tuple[str, str, str]]) -> None:
    """Every (prompt, form, where) rendered by the real template equals the frame's rendering; else a
    ChatTemplateError naming the prompt and where it comes from (its relation), before training starts."""
    for prompt, form, where in dict.fromkeys(prompts):
        messages, kw = frame.conversation(prompt, form)
        try:
            real = _render(tokenizer, messages, **kw)
        except Exception as e:  # a template's own error (jinja raise_exception, a role it refuses)
            raise ChatTemplateError(f"the chat template fails to render {prompt!r} ({where}): {e}; "
                                    f"use chat_template=off") from None
        if real != frame.text(prompt, form):
            raise ChatTemplateError(f"the chat template renders {prompt!r} ({where}) as {real!r}, not as one turn "
                                    f"around the prompt ({frame.text(prompt, form)!r}); use chat_template=off")


def describe(frame: ChatFrame | None) -> dict:
    """What a summary records of the rendering: off, or the frame's texts."""
    return {"chat_template": "off"} if frame is None else {"chat_template": "on", **dataclasses.asdict(frame)}
