from pathlib import Path

import pytest
import yaml

from rote import config
from rote.errors import ConfigError

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


def test_round_trip_through_dict():
    cfg = config.RunConfig()
    assert config.from_dict(config.to_dict(cfg)) == cfg
    assert config.replace(cfg, ["seed=3"]).seed == 3


def test_a_key_given_twice_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys: the first block's settings would be dropped silently."""
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nphase1:\n  epochs: 7\n  lr: 1e-3\nphase1:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: not valid YAML \(key 'phase1' given twice in one mapping \(first on line 2\)"):
        config.load(f)
    from rote import strict_yaml  # merge keys, then overriding keys, are meant; also merged mappings merged again
    nested = "defaults:\n  base: &base {lr: 1}\n  p1: &p1 {<<: *base, lr: 2}\nphase2:\n  <<: *p1\n"
    assert strict_yaml.safe_load(nested) == yaml.safe_load(nested) == {"defaults": {"base": {"lr": 1}, "p1": {"lr": 2}},
                                                                       "phase2": {"lr": 2}}
    f.write_text("name: x\nbase: &b {epochs: 7}\nphase1:\n  <<: *b\n  epochs: 8\n")  # a merge key then an override is meant
    with pytest.raises(ConfigError, match="unknown key 'base'"):  # (reaches the config checks, not the YAML error)
        config.load(f)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        config.load(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- strict: every key is read, every value in range


@pytest.mark.parametrize("override, message", [
    # types
    ("phase1.epochs=three", "phase1.epochs: expected an integer, got 'three'"),
    ("phase1.loss_mask=objects", "'objects' is not one of"),
    ("phase1.lr=fast", "expected a number, got 'fast'"),
    ("eval.multiple_choice=3", "expected true or false"),
    ("model=foo", "model: expected a mapping"),
    # keys of the other phase (one TrainConfig for both phases used to accept them and never read them)
    ("phase2.threshold=0.9", "unknown key 'threshold' in"),
    ("phase2.threshold=0.9", "c.yaml.phase2; it is a phase 1 setting"),
    ("phase2.until=memorized", "phase2.until: 'memorized' is not one of ['epochs', 'validation']"),
    ("phase2.save_epochs=[1]", "unknown key 'save_epochs'"),
    ("phase2.mixed=true", "unknown key 'mixed'"),
    ("phase1.n_prompts=2", "c.yaml.phase1; it is a phase 2 setting"),
    ("phase1.facts=all", "unknown key 'facts'"),
    ("phase1.prompts_from=mother", "unknown key 'prompts_from'"),
    ("phase1.checkpoint=x", "unknown key 'checkpoint'"),
    # list elements
    ("eval.stages=[phase1, phse2]", "eval.stages[1]: 'phse2' is not one of"),
    ("eval.languages=[de, xx]", "eval.languages[1]: 'xx' is not one of"),
    ("eval.prompt_sets=[key, trian]", "eval.prompt_sets[1]: 'trian' is not one of"),
    ("eval.mc_prompt_sets=[tests]", "eval.mc_prompt_sets[0]: 'tests' is not one of"),
    ("eval.stages=[phase1, phase1]", "eval.stages names 'phase1' twice"),
    # ranges
    ("phase1.lr=-1", "phase1.lr=-1.0 must be > 0"),
    ("phase1.epochs=0", "phase1.epochs=0 must be >= 1"),  # no phase: a baseline is an arm
    ("phase2.lr=0", "phase2.lr=0.0 must be > 0"),
    ("phase1.batch_size=0", "phase1.batch_size=0 must be >= 1"),
    ("data.n_options=0", "data.n_options=0 must be >= 1"),
    ("phase1.threshold=0", "phase1.threshold=0.0 must be > 0 and <= 1"),
    ("phase1.lora.dropout=1.5", "phase1.lora.dropout=1.5 must be >= 0 and <= 0.99"),
    ("phase1.save_epochs=[30]", "epoch 30 is not among phase 1's epochs"),
    ("phase2.patience=0", "phase2.patience=0 must be >= 1"),
    ("phase2.validation_prompts=0", "phase2.validation_prompts=0 must be >= 1"),
    # not a number at all: NaN passes every comparison, inf trains to a NaN loss
    ("phase1.lr=.inf", "phase1.lr=inf must be a finite number"),
    ("phase1.lr=nan", "phase1.lr=nan must be a finite number"),
    ("phase1.max_grad_norm=nan", "phase1.max_grad_norm=nan must be a finite number"),
    ("phase2.preserve.weight=-.inf", "phase2.preserve.weight=-inf must be a finite number"),
    ("phase1.lora.dropout=nan", "phase1.lora.dropout=nan must be a finite number"),
    ("seed=-1", "seed=-1 must be >= 0 and <= 4294967295"),
    ("seed=100000000000000000000000", "must be >= 0 and <= 4294967295"),
    # empty lists that would run and ask nothing
    ("data.relations=[]", "data.relations is empty: name at least one"),
    ("eval.prompt_sets=[]", "eval.prompt_sets is empty: name at least one"),
    # settings that only work together
    ("data.two_hop=[mother, place_of_birth]", "data.two_hop=['mother', 'place_of_birth'] must name two relations"),
    ("eval.prompt_sets=[test, repurposed]", "repurposed, which needs phase2.prompts_from"),
    ("eval.prompt_sets=[test, two_hop]", "two_hop, which needs data.two_hop"),
])
def test_strict_config_names_the_key(tmp_path, override, message):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\n")
    with pytest.raises(ConfigError) as err:
        config.load(f, [override])
    assert message in str(err.value)


def test_phase_classes_keep_their_own_settings():
    cfg = config.RunConfig()
    assert isinstance(cfg.phase1, config.Phase1Config) and isinstance(cfg.phase2, config.Phase2Config)
    assert not hasattr(cfg.phase2, "threshold") and not hasattr(cfg.phase1, "n_prompts")
    assert (cfg.phase1.epochs, cfg.phase2.epochs, cfg.phase2.schedule) == (20, 1, "constant")


def test_a_run_written_by_an_earlier_rote_reads_back(tmp_path):
    """config.yaml of an earlier rote carries phase-2 keys that phase 2 never read; at their old
    (only) values they are dropped, at another value they are refused by name."""
    import yaml
    old = config.to_dict(config.RunConfig())
    old["phase2"].update({"until": "epochs", "threshold": 1.0, "save_epochs": [], "mixed": False})
    old["phase1"].update({"n_prompts": 1, "facts": "split", "prompts_from": None, "checkpoint": None})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": old}))
    assert config.read_run_config(tmp_path) == config.RunConfig()
    old["phase2"]["threshold"] = 0.9
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"config": old}))
    with pytest.raises(ConfigError, match="unknown key 'threshold'"):
        config.read_run_config(tmp_path)


def test_out_dir_expands_home(tmp_path, monkeypatch):
    """`out_dir: ~/runs` in a YAML file (no shell to expand it) made a folder named `~` in the current one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "c.yaml"
    path.write_text("name: r\nout_dir: ~/runs\n")
    assert config.load(path).run_dir == tmp_path / "runs" / "r"


def test_relations_file_and_phase2_checkpoint_expand_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "rel.yaml").write_text((Path(__file__).parent.parent / "configs" / "relations" / "sworn_rival.yaml").read_text())
    path = tmp_path / "c.yaml"
    path.write_text("name: r\ndata:\n  relations_file: ~/rel.yaml\n  relations: [place_of_birth, sworn_rival]\n"
                    "  n_options: 3\nphase2:\n  checkpoint: ~/src/phase1/checkpoint\n")
    cfg = config.load(path)
    assert cfg.data.relations_file == str(tmp_path / "rel.yaml")
    assert cfg.phase2.checkpoint == str(tmp_path / "src" / "phase1" / "checkpoint")
