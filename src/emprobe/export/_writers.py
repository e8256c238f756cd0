"""Streaming writers: JSON lines, CSV and Parquet (in record batches); each returns the rows written."""

import csv
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from emprobe.errors import EmprobeError

BATCH = 5000


LINE_BREAKS = ("\u0085", "\u2028", "\u2029")
"""Characters JSON may leave raw that some readers take for line ends (Python's `str.splitlines`, older JavaScript)."""


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """One JSON object per line, UTF-8; a model's text never breaks a line, whatever splits them."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False)
            for char in LINE_BREAKS:
                line = line.replace(char, f"\\u{ord(char):04x}")
            f.write(line + "\n")
            n += 1
    return n


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""Cells that start like this are formulas to spreadsheets (OWASP: CSV injection); they get a leading `'`."""


def write_csv(rows: Iterable[dict[str, Any]], path: Path, columns: list[str]) -> int:
    """RFC 4180 CSV with a header; None becomes an empty cell, booleans `true`/`false`; text that a spreadsheet
    would run as a formula is prefixed with `'`."""
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(_cell(row[c]) for c in columns)
            n += 1
    return n


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def write_parquet(rows: Iterable[dict[str, Any]], path: Path, columns: list[tuple[str, str]]) -> int:
    """Parquet (zstd) written `BATCH` rows at a time with a fixed schema."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EmprobeError("parquet export needs pyarrow: pip install pyarrow") from None
    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types[kind]) for name, kind in columns])
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in _batches(rows, BATCH):
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            n += len(batch)
    return n
