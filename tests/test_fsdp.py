"""Sharded training (FSDP2 through accelerate): 2 processes on CPU (gloo) equal one process, the
checkpoint is the same plain Hugging Face folder, and setups the loop would run wrongly are refused."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from rote.training.loop import check_sharding
from rote.training.models import load_model
from test_distributed import TOLERANCE, _changed, _worst_relative_update_difference

HELPERS = Path(__file__).parent / "helpers"


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_save_a_plain_checkpoint(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, sharded = tmp_path / "one.pt", tmp_path / "checkpoint"
    # grad_accum 2: in the last step one process has 2 micro-batches and the other 1, which a
    # sharded model only survives if both run the same number of passes.
    subprocess.run([sys.executable, str(HELPERS / "ddp_train.py"), str(tiny_model_dir), str(single), "2"],
                   check=True, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
                    str(HELPERS / "fsdp_train.py"), str(tiny_model_dir), str(sharded), "2"],
                   check=True, env=env, timeout=300)
    reference = torch.load(single)["weights"]
    loaded = AutoModelForCausalLM.from_pretrained(sharded)  # plain transformers, no rote, no torch.distributed
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # still tied
    assert (sharded / "rote_key_tokens.json").is_file() and (sharded / "tokenizer.json").is_file()
    weights = loaded.state_dict()
    before = load_model(str(tiny_model_dir)).state_dict()
    assert set(before) == set(weights) == set(reference)
    assert _changed(before, weights) == len(before)  # every tensor trained: no Δ of zero below
    rel, name = _worst_relative_update_difference(before, reference, weights)
    print(f"FSDP2, 2 processes vs 1: worst relative update difference {rel:.3e} ({name}), tolerance {TOLERANCE:.0e}")
    assert rel < TOLERANCE, name


def _accelerator(kind: DistributedType, fsdp_version: int = 2):
    plugin = SimpleNamespace(fsdp_version=fsdp_version)
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin))


@pytest.mark.parametrize("accelerator, frozen_decay, says", [
    (_accelerator(DistributedType.DEEPSPEED), set(), "DeepSpeed is not supported"),
    (_accelerator(DistributedType.FSDP, fsdp_version=1), set(), "FSDP2 only"),
    (_accelerator(DistributedType.FSDP), {"embedding"}, "key_rows cannot run sharded"),
])
def test_sharded_setups_the_loop_would_run_wrongly_are_refused(accelerator, frozen_decay, says):
    with pytest.raises(ValueError, match=says):
        check_sharding(accelerator, frozen_decay)


def test_fsdp_asked_for_on_cpu_is_refused_not_run_unsharded(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="shards only on accelerators"):
        check_sharding(_accelerator(DistributedType.MULTI_CPU), set())
    check_sharding(_accelerator(DistributedType.FSDP), set())  # what a GPU launch gets: no complaint
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_sharding(_accelerator(DistributedType.NO), {"embedding"})  # one process, key rows: as before
