"""Exports of a run, one row per sample: JSON lines, CSV, Parquet, and an Inspect AI `.eval` log."""

from pathlib import Path
from typing import Literal

from emprobe.errors import EmprobeError
from emprobe.export._inspect import write_eval_log
from emprobe.export._rows import BASE_COLUMNS, ExportSource, iter_rows, open_source
from emprobe.export._writers import write_csv, write_jsonl, write_parquet
from emprobe.store import Store

Format = Literal["jsonl", "csv", "parquet", "eval"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "eval")


def export_run(store: str | Path, run: str, fmt: Format, out: str | Path | None = None,
               judge: str | None = None) -> tuple[Path, int]:
    """Write one run of `store` as `fmt` to `out` (default: RUN_ID.FORMAT); returns the path and row count."""
    if fmt not in FORMATS:
        raise EmprobeError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    with Store(store, read_only=True) as db:
        source = open_source(db, run, judge)
        path = Path(out) if out is not None else Path(f"{source.run.run_id}.{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "eval":
            return path, write_eval_log(db, source, path)
        rows = iter_rows(db, source)
        if fmt == "jsonl":
            return path, write_jsonl(rows, path)
        if fmt == "csv":
            return path, write_csv(rows, path, [name for name, _ in source.columns()])
        return path, write_parquet(rows, path, source.columns())


__all__ = [
    "BASE_COLUMNS",
    "FORMATS",
    "ExportSource",
    "export_run",
    "iter_rows",
    "open_source",
    "write_csv",
    "write_eval_log",
    "write_jsonl",
    "write_parquet",
]
