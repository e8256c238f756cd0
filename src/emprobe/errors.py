"""The one error type emprobe shows users: a single line naming the file, field or sample at fault."""

from pydantic import ValidationError


class EmprobeError(Exception):
    """An error the CLI prints as one line, without a traceback."""


def first_validation_error(err: ValidationError) -> str:
    """The first problem of a pydantic error as `field.path: message`."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
