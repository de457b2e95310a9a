"""scripts/check_report.py: the reports in headless Chromium. Skipped where Chromium is not installed
(`make test` on a fresh machine); `apt-get install -y chromium` enables it."""
import base64
import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)")

spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
check_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_report)


def _png(width: int, height: int, pixel: bytes = b"\xff\xff\xff") -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + pixel * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_broken_pages_are_caught(tmp_path):
    blank = base64.b64encode(_png(100, 100)).decode()
    tiny = base64.b64encode(_png(8, 8, b"\x00\x00\x00")).decode()
    page = tmp_path / "bad.html"
    page.write_text(f'<html><body><img src="missing.png"><img src="data:image/png;base64,{blank}">'
                    f'<img src="data:image/png;base64,{tiny}"><script>throw new Error("boom")</script></body></html>')
    problems = check_report.check_page(str(CHROMIUM), page, tmp_path / "shot.png")
    text = "\n".join(problems)
    assert "image 1 is not an inline PNG" in text and "image 2 is blank" in text and "image 3 is only 8 x 8" in text
    assert "console" in text and "boom" in text
    assert (tmp_path / "shot.png").is_file()


@pytest.mark.slow
def test_a_run_report_and_a_study_report_pass(tiny_model_dir, tmp_path, capsys):
    from rote import config
    from rote.runner import run
    cfg = config.load(ROOT / "configs" / "smoke.yaml", [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}",
                                                         "eval.prompts_per_set=1"])
    run_dir = run(cfg, quiet=True)
    study = sorted((ROOT / "docs" / "results").glob("*/report.html"))[0]
    assert check_report.main([str(run_dir), "--study", str(study)]) == 0, capsys.readouterr().err
    for name in ("report", "study"):
        assert (run_dir / "report" / "screenshots" / f"{name}.png").stat().st_size > 10_000
