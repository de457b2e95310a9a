"""Train the tiny model once; run alone or under `torchrun --nproc_per_node 2`.

    python tests/helpers/ddp_train.py MODEL_DIR OUT.pt [GRAD_ACCUM]
"""
import sys

import torch

from rote.config import TrainConfig
from rote.training.encode import encode
from rote.training.loop import train
from rote.training.models import load_model, load_tokenizer


def train_tiny(model_dir: str, log_dir: str, grad_accum: int = 1):
    """The tiny model after 2 epochs on 7 examples; returns (tokenizer, model, the loop's summary)."""
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    objects = [" Paris", " San Sebastian", " Lyon", " Buenos Aires", " Oslo", " Ho Chi Minh City", " Kyoto"]
    examples = [encode(tok, f"Gene Finley{i} was born in", o) for i, o in enumerate(objects)]
    # 7 examples, global batch 4: the last step has 3, so one process gets 1 and one gets 2 (with
    # grad_accum 2: 2 micro-batches on one process, 1 on the other).
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=4, grad_accum=grad_accum, precision="fp32", warmup_steps=0,
                      max_grad_norm=1.0)
    return tok, model, train(model, examples, cfg, tok.pad_token_id, log_dir, seed=3)


def main(model_dir: str, out: str, grad_accum: str = "1") -> None:
    _, model, summary = train_tiny(model_dir, out + ".log", int(grad_accum))
    if summary["processes"] == 1 or torch.distributed.get_rank() == 0:
        torch.save({"weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "processes": summary["processes"]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
