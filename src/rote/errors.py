"""The project's error base class, its exit codes, and `quote` for values in messages. Pure: no imports of rote.

Every failure a user can cause (a bad config, a bad input file, a run folder that cannot be used,
a model that cannot be found, a folder another rote process is writing) raises a `RoteError`
subclass; `rote.cli.main` prints its message as one line on stderr and exits with its code.
Anything else is a bug and keeps its traceback.

    code  meaning                                                   classes
    0     success
    1     a bug (a traceback is printed)
    2     bad config, arguments or input file                       ConfigError, DataError, ProbeError
    3     a run or output folder that cannot be used as asked       RunError, InjectError, UnreadableFileError
    4     the model is missing or cannot be reached                 ModelError
    5     the folder is in use by another rote process              LockedError
    130   interrupted (Ctrl-C)
"""
from __future__ import annotations

import sys
import warnings

import yaml

QUOTE_LIMIT = 200  # characters of an offending value shown in a message


class RoteWarning(UserWarning):
    """Something a user should fix that does not stop the run (a test prompt that repeats a training
    prompt's words). Shown as one line, `warning: FILE:LINE: what, and what to do`, once per process
    however many files carry it (`rote inject` reads the input's relations, then their copy in the run
    folder), not in Python's warning format with the source line of the `warnings.warn` call."""


_SHOWN: set[str] = set()
_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if not issubclass(category, RoteWarning):
        return _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)
    text = " ".join(str(message).split())
    finding = text.split(": ", 1)[-1]  # without its "FILE:LINE": the same finding in a copy of the file
    if finding not in _SHOWN:
        _SHOWN.add(finding)
        print(f"warning: {text}", file=file or sys.stderr)


# Installed when rote is imported: only rote's own warnings change format; every other keeps Python's.
# (A `warnings.catch_warnings(record=True)`, as pytest.warns uses, still records them as before.)
warnings.showwarning = _show_warning


class RoteError(Exception):
    """A failure the user can fix; `exit_code` is what `rote` exits with."""
    exit_code = 1


class ConfigError(RoteError, ValueError):
    """A config file or override that cannot be used; the message names the key."""
    exit_code = 2


class RunError(RoteError, RuntimeError):
    """A run folder that cannot be used as asked (not a run folder, started with another config)."""
    exit_code = 3


class UnreadableFileError(RunError, ValueError):
    """A file in a run, study or cache folder that does not read back (not JSON: damaged, cut short,
    edited); the message names it. Also a ValueError, as the json module's own error was, so code that
    catches a malformed file as one still does."""


class ModelError(RoteError):
    """A model name that is not a bundled name, a local folder or a reachable hub id."""
    exit_code = 4


class LockedError(RoteError):
    """A run or output folder that another rote process is writing."""
    exit_code = 5


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), cut to about `limit` characters (with the full length said), so a 5 MB value
    never floods a message. Long values are cut before repr, so this is cheap on any input."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def one_line(message: str) -> str:
    """A message as one line (for stderr): line breaks become ' | '."""
    return " | ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "(no message)"


def read_utf8(path, error: type[RoteError]) -> str:
    """A text file's content; a byte that is not UTF-8 raises `error` naming the file, line and column
    (Python's own UnicodeDecodeError names neither). A leading byte-order mark is dropped."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                    "save the file as UTF-8") from None


def yaml_error(path, text: str, e: yaml.YAMLError, error: type[RoteError]) -> RoteError:
    """A YAML error as `error` naming file and line: PyYAML's own message names "<unicode string>" (it
    is given the decoded text), and a reader error gives a position, not a mark."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    else:
        line = text.count("\n", 0, getattr(e, "position", 0) or 0) + 1
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or e
    return error(f"{path}:{line}: not valid YAML ({one_line(problem)})")


def read_yaml(path, error: type[RoteError]):
    """A YAML file's content (None when empty); a byte that is not UTF-8, text that is not YAML or a
    key given twice (rote.strict_yaml) raises `error` naming the file and line."""
    from rote import strict_yaml
    text = read_utf8(path, error)
    try:
        return strict_yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_error(path, text, e, error) from None
