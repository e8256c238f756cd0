"""Loaded backends shared by the stages of one command: each model is loaded once, all are closed together."""

from typing import Any

from emprobe.hashing import stable_hash
from emprobe.model._backend import Backend, ModelRef
from emprobe.model._registry import load_backend, resolve


class BackendPool:
    """Backends by resolved model (identity and options); use as a context manager so they are closed."""

    def __init__(self) -> None:
        self._loaded: dict[str, Backend] = {}

    def get(self, ref: ModelRef) -> Backend:
        """The backend for `ref`, loaded on first use."""
        key = stable_hash(ref.identity, ref.options)
        if key not in self._loaded:
            self._loaded[key] = load_backend(ref)
        return self._loaded[key]

    def load(self, spec: str, options: dict[str, Any] | None = None) -> Backend:
        """Resolve `spec` and return its backend."""
        return self.get(resolve(spec, options=options))

    def __len__(self) -> int:
        """How many backends are loaded."""
        return len(self._loaded)

    def close(self) -> None:
        loaded, self._loaded = list(self._loaded.values()), {}
        for backend in loaded:
            backend.close()

    def __enter__(self) -> "BackendPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
