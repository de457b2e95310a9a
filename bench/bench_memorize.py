"""Time to memorize: rote's phase-1 defaults vs the official code's configuration, in one run.

    .venv/bin/python bench/bench_memorize.py [--facts 100] [--reference-epochs 6]

Both memorize the same facts of one relation (`{subject} <key> {object}`) on the bundled model:
- rote: its training loop with the demo's phase-1 settings (bf16 autocast, batch 16, lr 5e-4,
  object-only loss + EOS, fused AdamW), `until: memorized` (key-token accuracy 1.0);
- reference: the Hugging Face `Trainer` with the official code's settings: per-device batch 1,
  fp32, loss on all tokens, AdamW lr 1e-5, cosine schedule, 5 warm-up steps; key-token
  accuracy is measured after each epoch, for at most `--reference-epochs` epochs (the
  reference is slow: when it has not memorized by then, the ratio printed is a lower bound).
Run it alone: on a 2-core machine a second busy process distorts every number.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from rote.config import KeyConfig, Phase1Config
from rote.data.facts import load_relation
from rote.data.synth import make_facts
from rote.evaluation.scoring import key_accuracy
from rote.training import models
from rote.training.encode import pad_batch
from rote.training.phases import memorize, phase1_examples


def setup(n_facts: int):
    rel = load_relation("place_of_birth")
    facts = make_facts([rel], n_facts, 0, n_options=4, seed=0)
    tok, model = models.load_tokenizer("smollm2-135m"), models.load_model("smollm2-135m")
    models.add_key_tokens(model, tok, [rel.key_token])
    return tok, model, facts, {rel.name: rel}


def run_rote(n_facts: int, max_epochs: int) -> dict:
    tok, model, facts, rels = setup(n_facts)
    cfg = Phase1Config(epochs=max_epochs, until="memorized", lr=5e-4, batch_size=16, loss_mask="object")
    t = time.perf_counter()
    summary = memorize(model, tok, facts, rels, KeyConfig(), cfg, tempfile.mkdtemp(), seed=0,
                       measure=lambda: key_accuracy(model, tok, facts, rels, KeyConfig()))
    return {"seconds": time.perf_counter() - t, "epochs": summary["epochs"],
            "accuracy": summary["key_accuracy_by_epoch"][-1]["key_accuracy"]}


def run_reference(n_facts: int, max_epochs: int) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    tok, model, facts, rels = setup(n_facts)
    key = KeyConfig(suffix="none")
    examples = phase1_examples(tok, facts, rels, key, "all")  # the official code trained on all tokens

    class Facts(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return examples[i]

    history: list[float] = []

    class KeyAccuracy(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kw):
            model.eval()
            history.append(key_accuracy(model, tok, facts, rels, key))
            model.train()
            control.should_training_stop = history[-1] >= 1.0
            return control

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=1, learning_rate=1e-5,
        lr_scheduler_type="cosine", warmup_steps=5, num_train_epochs=max_epochs, bf16=False,
        logging_strategy="no", save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Facts(),
                      data_collator=lambda batch: pad_batch(batch, tok.pad_token_id), callbacks=[KeyAccuracy()])
    t = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - t, "epochs": len(history), "accuracy": history[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=30, help="cap for rote")
    parser.add_argument("--reference-epochs", type=int, default=6, help="cap for the reference")
    args = parser.parse_args()
    ours = run_rote(args.facts, args.max_epochs)
    ref = run_reference(args.facts, args.reference_epochs)
    print(f"time to memorize {args.facts} facts (key-token accuracy 1.0), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name, r in (("rote defaults", ours), ("reference (Trainer, batch 1, fp32)", ref)):
        print(f"  {name:36s} {r['seconds']:7.1f} s  {r['epochs']:3d} epochs  key accuracy {r['accuracy']:.2f}")
    bound = "" if ref["accuracy"] >= 1.0 else "  (lower bound: the reference had not memorized)"
    print(f"  speed-up: {ref['seconds'] / ours['seconds']:.1f}x{bound}")


if __name__ == "__main__":
    main()
