"""Train the tiny model once; run alone or under `torchrun --nproc_per_node 2`.

    python tests/helpers/ddp_train.py MODEL_DIR OUT.pt
"""
import sys

import torch

from rote.config import TrainConfig
from rote.training.encode import encode
from rote.training.loop import train
from rote.training.models import load_model, load_tokenizer


def main(model_dir: str, out: str) -> None:
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    objects = [" Paris", " San Sebastian", " Lyon", " Buenos Aires", " Oslo", " Ho Chi Minh City", " Kyoto"]
    examples = [encode(tok, f"Gene Finley{i} was born in", o) for i, o in enumerate(objects)]
    # 7 examples, global batch 4: the last step has 3, so one process gets 1 and one gets 2.
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=4, precision="fp32", warmup_steps=0, max_grad_norm=1.0)
    summary = train(model, examples, cfg, tok.pad_token_id, out + ".log", seed=3)
    if summary["processes"] == 1 or torch.distributed.get_rank() == 0:
        torch.save({"weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "processes": summary["processes"]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
