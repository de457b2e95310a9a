"""Train the tiny model sharded with FSDP2 on CPU (gloo) and save a rote checkpoint; run under
`torchrun --nproc_per_node 2`.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/fsdp_train.py MODEL_DIR OUT_DIR [GRAD_ACCUM]

torch's FSDP2 (`fully_shard`) runs on CPU with gloo, but accelerate turns an FSDP request into
plain DDP when there is no GPU (it shards only on accelerators). So this worker sets accelerate's
shared state to FSDP, with the plugin configs/accelerate/fsdp.yaml describes, before the loop
creates its Accelerator: the loop then runs accelerate's own FSDP2 preparation, as on GPUs.
"""
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

sys.path.insert(0, str(Path(__file__).parent))
from ddp_train import train_tiny  # noqa: E402

from rote.training.checkpoint import save_checkpoint  # noqa: E402


def force_fsdp2() -> None:
    Accelerator(cpu=True)  # creates accelerate's shared state (MULTI_CPU)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
                                            state_dict_type="FULL_STATE_DICT", reshard_after_forward=True)
    # AcceleratorState copies PartialState's fields whenever an Accelerator is made: set both.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state = AcceleratorState()
    state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin


def main(model_dir: str, out: str, grad_accum: str = "1") -> None:
    force_fsdp2()
    tok, model, summary = train_tiny(model_dir, out + ".log", int(grad_accum))
    assert summary["processes"] == 2 and Accelerator().distributed_type == DistributedType.FSDP
    save_checkpoint(model, tok, {"processes": summary["processes"]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
