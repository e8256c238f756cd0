"""Backends by name: `hf` (local transformers, the default) and `openai-compat` (HTTP); others register here."""

from collections.abc import Callable

from emprobe.errors import EmprobeError
from emprobe.model._backend import Backend
from emprobe.model._resolve import adapter_identity, resolve_model

BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, BackendFactory] = {}
_IDENTITIES: dict[str, Callable[[str], str]] = {}


def register_backend(prefix: str, factory: BackendFactory, identity: Callable[[str], str] | None = None) -> None:
    """Make `PREFIX:MODEL` names load through `factory(MODEL, **options)`.

    `identity(MODEL)` names the model without loading it (what cached generations are keyed on); without
    it the name is resolved as a local model.
    """
    _FACTORIES[prefix] = factory
    if identity is not None:
        _IDENTITIES[prefix] = identity


def _split(spec: str) -> tuple[str, str]:
    """(backend prefix, model) for `PREFIX:MODEL`; plain names and paths belong to `hf`."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in _FACTORIES:
        return prefix, rest
    if sep and "/" not in prefix and not prefix.startswith("."):
        raise EmprobeError(f"unknown backend {prefix!r} in model {spec!r}: known are {', '.join(_FACTORIES)}")
    return "hf", spec


def load_backend(spec: str, **options) -> Backend:
    """Load `spec`: `PREFIX:MODEL` for a registered backend, else a local transformers model."""
    prefix, model = _split(spec)
    return _FACTORIES[prefix](model, **options)


def model_identity(spec: str, adapter: str | None = None) -> str:
    """The identity generations are cached under, computed without loading any weights."""
    prefix, model = _split(spec)
    if prefix in _IDENTITIES:
        if adapter:
            raise EmprobeError(f"model {spec!r}: adapters apply to local models only")
        return _IDENTITIES[prefix](model)
    identity = resolve_model(model).identity
    return f"{identity}+{adapter_identity(adapter)}" if adapter else identity


def _hf(model: str, **options) -> Backend:
    from emprobe.model._providers.hf import HFBackend

    return HFBackend(model, **options)


def _openai_compat(model: str, **options) -> Backend:
    from emprobe.model._providers.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(model, **options)


def _openai_compat_identity(model: str) -> str:
    from emprobe.model._providers.openai_compat import endpoint_identity

    return endpoint_identity(model)


register_backend("hf", _hf)
register_backend("openai-compat", _openai_compat, _openai_compat_identity)
