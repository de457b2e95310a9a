"""YAML read as PyYAML's safe loader reads it, except that a key given twice in one mapping is an
error: PyYAML keeps the last one silently, so a config with two `phase1:` blocks would run with
the second alone, and a relation file's second `prompts:` would drop the first."""
from __future__ import annotations

import yaml


class StrictLoader(yaml.SafeLoader):
    def flatten_mapping(self, node):
        # Each mapping's own keys are checked once, before merge keys (`<<: *base`) add the keys it
        # overrides: flattening rewrites the node in place, and a mapping merged into another one is
        # flattened there before it is built itself.
        if not getattr(node, "rote_keys_checked", False):
            node.rote_keys_checked = True
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
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
        super().flatten_mapping(node)


def safe_load(text: str):
    """yaml.safe_load, refusing duplicate keys (a yaml.YAMLError with the key's line)."""
    return yaml.load(text, Loader=StrictLoader)
