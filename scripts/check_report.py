"""Open rote's HTML reports in headless Chromium and fail on what a reader would see broken.

    python scripts/check_report.py [RUN_DIR] [--study docs/results/NAME/report.html] [--chromium PATH]

Checks the run report (RUN_DIR/report/report.html, default runs/demo) and one study report (default:
the first docs/results/*/report.html): Chromium must load each without a console error, and in
the DOM it renders every <img> must be an inline PNG (data: URI) that decodes to a real picture
(PNG signature, at least 50 x 50 pixels, not a blank single-colour canvas); a report needs at
least one figure. Screenshots of each page go to RUN_DIR/report/screenshots/. The injection card
(`rote inject`) is markdown only (card.md), so there is no card HTML to open.

Exit 0 when all pages pass, 1 with one line per problem otherwise, 2 when Chromium or a report is missing.
"""
from __future__ import annotations

import argparse
import base64
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# No network, no first-run or update machinery, no GPU: the same on a laptop, in CI and as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=5000"]
MIN_SIDE = 50  # pixels: smaller than this is no figure


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def png_problem(data: bytes) -> str | None:
    """Why `data` is not a non-trivial PNG, or None. Blank = every pixel of the decoded image the same."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    if width < MIN_SIDE or height < MIN_SIDE:
        return f"only {width} x {height} pixels"
    # Concatenate the IDAT chunks and decompress: rows of identical bytes everywhere mean a blank canvas.
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    try:
        raw = zlib.decompress(idat)
    except zlib.error:
        return "PNG data does not decompress"
    stride = len(raw) // height
    rows = {raw[i * stride + 1:(i + 1) * stride] for i in range(height)}  # skip each row's filter byte
    if len(rows) <= 1 and len(set(next(iter(rows), b""))) <= 4:  # one repeated row of one pixel value
        return "blank (one colour)"
    return None


def check_page(chromium: str, page: Path, shot: Path) -> list[str]:
    """Problems with `page` as Chromium renders it; writes a screenshot to `shot`."""
    problems = []
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="rote-chromium-") as profile:
        base = [chromium, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(base + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(base + ["--window-size=1280,3000", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    if dom.returncode != 0 or not dom.stdout.strip():
        return [f"{page}: Chromium could not render it (exit {dom.returncode}): {dom.stderr.strip()[-300:]}"]
    # Console messages come as `...:INFO:CONSOLE(line)] "message", source: URL (line)`; errors also
    # as "Uncaught ..." and failed loads as "Failed to load resource".
    for line in dom.stderr.splitlines():
        if "CONSOLE" in line and any(w in line for w in ("Uncaught", "Error", "error", "Failed to load")):
            problems.append(f"{page}: console: {line.strip()[:300]}")
    parser = Images()
    parser.feed(dom.stdout)
    if not parser.sources:
        problems.append(f"{page}: no figure at all")
    for i, src in enumerate(parser.sources, 1):
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"{page}: image {i} is not an inline PNG (src {src[:80]!r})")
            continue
        try:
            why = png_problem(base64.b64decode(src.split(",", 1)[1], validate=True))
        except (ValueError, struct.error) as e:
            why = f"undecodable ({e})"
        if why:
            problems.append(f"{page}: image {i} is {why}")
    if not shot.is_file() or shot.stat().st_size < 1000:
        problems.append(f"{page}: no screenshot was written to {shot}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default=str(ROOT / "runs" / "demo"), help="run folder (default runs/demo)")
    parser.add_argument("--study", help="a study report.html (default: the first docs/results/*/report.html)")
    parser.add_argument("--chromium", default=find_chromium(), help="Chromium binary (default: /usr/bin/chromium)")
    args = parser.parse_args(argv)
    if not args.chromium:
        print("check_report: Chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    run_dir = Path(args.run)
    study = Path(args.study) if args.study else next(iter(sorted((ROOT / "docs" / "results").glob("*/report.html"))), None)
    pages = {"report": run_dir / "report" / "report.html", "study": study}
    missing = [f"{k} ({p})" for k, p in pages.items() if p is None or not p.is_file()]
    if missing:
        print(f"check_report: missing {', '.join(missing)}; run `make demo` (or pass RUN_DIR) first", file=sys.stderr)
        return 2
    problems = []
    for name, page in pages.items():
        found = check_page(args.chromium, page, run_dir / "report" / "screenshots" / f"{name}.png")
        problems += found
        print(f"{'ok  ' if not found else 'FAIL'} {page}")
    print("the injection card is markdown only (card.md): no HTML to check")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
