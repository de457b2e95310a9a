"""Pure layers never import torch, so data, metrics and reports work on a laptop without it."""
import subprocess
import sys

import pytest

PURE = ["rote", "rote.config", "rote.facts", "rote.synth", "rote.templates", "rote.metrics", "rote.geometry",
        "rote.plots", "rote.report", "rote.probe_report",
        "rote.study", "rote.study_report", "rote.card"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_does_not_import_torch(module):
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules]; " \
           "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"{module} imports {out.stdout.strip()} {out.stderr[-500:]}"
