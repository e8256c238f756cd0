"""emprobe's numba kernels are optional (numba comes with the hf extra): each is looked up here, None without it."""

import functools
import importlib
from typing import Any


@functools.cache
def kernel(module: str, name: str) -> Any:
    """`name` from the numba module `emprobe.model._providers.<module>`, or None where numba does not import."""
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    except ImportError:
        return None
