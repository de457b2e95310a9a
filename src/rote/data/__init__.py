"""Layer `data`: relations, facts, their text, and the files they come from. No torch.

facts (Relation, Fact, built-in relations) · relation_files (the one relation-file reader) ·
synth (invented subjects, fact sets, two-hop facts) · factset (a config's fact set and its split) ·
templates (the text of every example) · userdata (`rote inject`'s input) · prompt_hygiene · limits
(token lengths against a model's context, given its tokenizer). Package data: relations/*.yaml,
name lists, locality probes, held-out paragraphs, two-hop prompts.
"""
