"""Run the `emprobe` entry point in this process (no second torch import): exit code, stdout, stderr."""

import sys

import pytest

from emprobe.cli import main


def emprobe(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    argv, sys.argv = sys.argv, ["emprobe", *args]
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
