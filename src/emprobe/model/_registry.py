"""Backends by name: `hf` (local transformers, the default); others register here."""

from collections.abc import Callable

from emprobe.errors import EmprobeError
from emprobe.model._backend import Backend

BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(prefix: str, factory: BackendFactory) -> None:
    """Make `PREFIX:MODEL` names load through `factory(MODEL, **options)`."""
    _FACTORIES[prefix] = factory


def load_backend(spec: str, **options) -> Backend:
    """Load `spec`: `PREFIX:MODEL` for a registered backend, else a local transformers model."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in _FACTORIES:
        return _FACTORIES[prefix](rest, **options)
    if sep and "/" not in prefix and not prefix.startswith("."):
        raise EmprobeError(f"unknown backend {prefix!r} in model {spec!r}: known are {', '.join(_FACTORIES)}")
    return _FACTORIES["hf"](spec, **options)


def _hf(model: str, **options) -> Backend:
    from emprobe.model._providers.hf import HFBackend

    return HFBackend(model, **options)


register_backend("hf", _hf)
