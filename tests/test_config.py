from pathlib import Path

import pytest

from rote import config
from rote.config import ConfigError

# Run configs; the study files under configs/studies/ are loaded by tests/test_study.py.
CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_loads(path):
    cfg = config.load(path)
    assert cfg.name and cfg.data.relations


def test_defaults_and_nested_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nphase1:\n  lr: 3e-4\n  epochs: 7\n")
    cfg = config.load(f, ["phase2.lr=1e-5", "data.relations=[mother, capital]", "eval.multiple_choice=false"])
    assert cfg.phase1.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string: coerced
    assert cfg.phase1.epochs == 7
    assert cfg.phase2.lr == pytest.approx(1e-5)
    assert cfg.data.relations == ("mother", "capital")
    assert cfg.eval.multiple_choice is False
    assert cfg.phase2.epochs == 1  # phase 2 has its own defaults
    assert cfg.run_dir == Path("runs/x")


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("phase1:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rate' in .*bad.yaml\.phase1"):
        config.load(f)


def test_unknown_override_key_names_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        config.load(f, ["phase1.epoch=3"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        config.load(f, ["phase1.epochs"])


@pytest.mark.parametrize("override, message", [
    ("phase1.epochs=three", "phase1.epochs: expected an integer, got 'three'"),
    ("phase1.loss_mask=objects", "'objects' is not one of"),
    ("phase1.lr=fast", "expected a number, got 'fast'"),
    ("eval.multiple_choice=3", "expected true or false"),
    ("model=foo", "model: expected a mapping"),
])
def test_bad_values_are_named(tmp_path, override, message):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(f, [override])


def test_round_trip_through_dict():
    cfg = config.RunConfig()
    assert config.from_dict(config.to_dict(cfg)) == cfg
    assert config.replace(cfg, ["seed=3"]).seed == 3


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        config.load(tmp_path / "nope.yaml")
