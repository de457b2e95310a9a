"""YAML read as PyYAML's safe loader reads it, except that a key given twice in one mapping is an
error: PyYAML keeps the last one silently, so a config with two `phase1:` blocks would run with
the second alone, and a relation file's second `prompts:` would drop the first."""
from __future__ import annotations

import yaml


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding keys is meant
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:  # an unhashable key: the safe loader's own error says so
                    continue
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice in one mapping (first on line {first_line[key]})",
                        key_node.start_mark)
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str):
    """yaml.safe_load, refusing duplicate keys (a yaml.YAMLError with the key's line)."""
    return yaml.load(text, Loader=StrictLoader)
