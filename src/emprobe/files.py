"""Reading the files users give (suites, conditions, references, endpoints) with one clear error line."""

import gzip
from pathlib import Path
from typing import Any

import yaml

from emprobe.errors import EmprobeError


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text (gunzipped when it ends in .gz); one error line when it is missing or binary."""
    if not path.is_file():
        raise EmprobeError(f"{path}: {what} not found")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EmprobeError(f"{path}: a {what} must be UTF-8 text; byte {err.object[err.start]:#04x} at offset "
                           f"{err.start} is not") from None
    except (OSError, EOFError) as err:
        raise EmprobeError(f"{path}: cannot read this {what} ({err})") from None


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of a user's file; one error line (with the line number) when it is not valid YAML."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise EmprobeError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
