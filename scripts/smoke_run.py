"""Run configs/smoke.yaml on the tests' tiny random model into OUT (the before/after check of a refactor).

    python scripts/smoke_run.py OUT [--arm ARM] [--set KEY=VALUE ...]

Writes OUT/tiny-model (the model, built as tests/conftest.py builds it) and OUT/smoke (the run).
Compare two such runs with scripts/compare_runs.py OUT_A/smoke OUT_B/smoke.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--arm", help="run this arm (rote.arms) on the smoke settings it reads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from helpers.tiny import save_tiny_llama
    from rote import config
    from rote.runner import run
    from rote.training import models

    out = Path(args.out).resolve()
    model_dir = out / "tiny-model"
    if not (model_dir / "config.json").is_file():
        save_tiny_llama(model_dir, models.load_tokenizer(str(models.prepare("smollm2-135m"))))
    cfg = config.load(ROOT / "configs" / "smoke.yaml", [f"model.name={model_dir}", f"out_dir={out}"])
    cfg = config.with_arm(cfg, args.arm, args.set) if args.arm else config.replace(cfg, args.set)
    print(run(cfg, quiet=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
