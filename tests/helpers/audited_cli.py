"""`rote` (rote.cli.main) with every file-system write under one folder recorded, per process: how
tests/test_processes.py checks that only the main process writes when rote runs as several.

    accelerate launch --multi_gpu --num_processes 2 tests/helpers/audited_cli.py ROOT LOG_DIR run CONFIG ...

At exit, LOG_DIR/writes-<RANK>.txt holds one line per write under ROOT (Python's audit events:
open for writing, rename or replace, mkdir, remove, rmdir, rmtree, link, truncate). Writes made
outside Python (safetensors' own file writes) are not seen, but each is followed by a rename that is.
"""
import atexit
import os
import sys
from pathlib import Path

RENAMES = {"os.rename"}  # os.rename and os.replace: (source, target, ...)
PATH_FIRST = {"os.remove", "os.mkdir", "os.rmdir", "os.link", "os.truncate", "shutil.rmtree"}
WRITING_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def main() -> int:
    root, log_dir, *argv = sys.argv[1:]
    root = os.path.realpath(root) + os.sep
    seen: list[str] = []

    def under(path) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(root)
        except (TypeError, ValueError):  # a file descriptor, not a path
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITING_FLAGS)
            if writing and under(path):
                seen.append(f"open {path}")
        elif event in RENAMES and (under(args[0]) or under(args[1])):
            seen.append(f"{event} {args[0]} -> {args[1]}")
        elif event in PATH_FIRST and args and under(args[0]):
            seen.append(f"{event} {args[0]}")

    def write_log() -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        Path(log_dir, f"writes-{os.environ.get('RANK', '0')}.txt").write_text("".join(line + "\n" for line in seen))

    sys.addaudithook(hook)
    atexit.register(write_log)
    from rote.cli import main as rote
    return rote(argv)


if __name__ == "__main__":
    sys.exit(main())
