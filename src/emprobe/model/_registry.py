"""Backends by name: `hf` (local transformers, the default) and `openai-compat` (HTTP); plugins add more.

A backend is registered as a `BackendEntry`: `resolve` turns a spec into a `ModelRef` without loading anything
(so every option is checked and the cache identity known before work starts), `load` builds the backend from
it. Third-party packages register entries under the entry-point group `emprobe.backends`.
"""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emprobe.errors import EmprobeError, first_validation_error
from emprobe.model._backend import Backend, ModelRef
from emprobe.model._resolve import adapter_identity, resolve_model
from emprobe.plugins import Registry

DEFAULT_BACKEND = "hf"


@dataclass(frozen=True)
class BackendEntry:
    """How one backend resolves specs (`resolve(name, adapter) -> identity, location`) and loads them."""

    load: Callable[[ModelRef], Backend]
    identity: Callable[[str, str | None], tuple[str, str | None]]
    """(name, adapter) -> (identity, location of the weights or None), without loading them."""
    options: type[BaseModel] | None = None
    """The options this backend accepts (`--backend-option k=v`); None accepts none."""
    numerics: Callable[[dict[str, Any]], str] | None = None
    """(validated options) -> the numerics that change its answers (device, dtype), named in the identity so
    answers computed differently are never reused as each other's; "" for the backend's reference numerics."""


BACKENDS: Registry[BackendEntry] = Registry("emprobe.backends", "backend")


def register_backend(prefix: str, entry: BackendEntry) -> None:
    """Make `PREFIX:MODEL` specs resolve and load through `entry`."""
    BACKENDS.register(prefix, entry)


def _split(spec: str) -> tuple[str, str]:
    """(backend prefix, model) for `PREFIX:MODEL`; plain names and paths belong to the default backend."""
    prefix, sep, rest = spec.partition(":")
    if sep and "/" not in prefix and not prefix.startswith(".") and len(prefix) > 1:  # C:\ stays a path
        BACKENDS.require(prefix, where=f" in model {spec!r}")
        return prefix, rest
    return DEFAULT_BACKEND, spec


def resolve(spec: str, adapter: str | None = None, options: dict[str, Any] | None = None) -> ModelRef:
    """The model's backend, identity and validated options, computed without loading any weights."""
    prefix, name = _split(spec)
    entry = BACKENDS.require(prefix, where=f" in model {spec!r}")
    checked = _validate_options(entry, prefix, options or {})
    identity, location = entry.identity(name, adapter)
    numerics = entry.numerics(checked) if entry.numerics else ""
    return ModelRef(spec=spec, backend=prefix, name=name, adapter=adapter, location=location, options=checked,
                    identity=f"{identity}|{numerics}" if numerics else identity)


def _validate_options(entry: BackendEntry, prefix: str, options: dict[str, Any]) -> dict[str, Any]:
    if entry.options is None:
        if options:
            raise EmprobeError(f"backend {prefix!r} takes no options (got {', '.join(sorted(options))})")
        return {}
    known = entry.options.model_fields
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise EmprobeError(f"backend {prefix!r} has no option {unknown[0]!r}: its options are {', '.join(known)}")
    try:
        return entry.options.model_validate(options).model_dump(exclude_unset=True)
    except ValidationError as err:
        raise EmprobeError(f"backend option {first_validation_error(err)}") from None


def load_backend(model: ModelRef | str, adapter: str | None = None, **options: Any) -> Backend:
    """Load a resolved model, or resolve a spec (with `adapter` and `options`) and load it."""
    ref = model if isinstance(model, ModelRef) else resolve(model, adapter, options)
    return BACKENDS.require(ref.backend, where=f" in model {ref.spec!r}").load(ref)


def parse_options(pairs: list[str]) -> dict[str, str]:
    """`["k=v", ...]` from the command line as a dict; the backend's options model converts the values."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EmprobeError(f"--backend-option {pair!r}: write KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# ---- the built-in backends ---------------------------------------------------------------------------


class HFOptions(BaseModel):
    """Options of the local transformers backend."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | Literal["auto"] = "auto"
    """Rows decoded at once; `auto` measures the size past which throughput stops growing (cached per machine)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    threads: int | None = Field(default=None, ge=1)
    """CPU threads; None uses the cores that are free when the model loads."""
    prepack: bool = True
    """On the CPU, lay the linear weights out for oneDNN once at load (a second copy of them) and fuse projections
    of one input; false keeps torch's own layers."""
    compile_norms: bool = True
    """On the CPU in float32 or bfloat16, run Llama-like RMSNorms as one compiled pass each (numba); false keeps
    transformers' own."""
    fuse_steps: bool = True
    """On the CPU, run a Llama's one-token decode steps as prepacked matmuls with compiled passes between them
    (numba; needs `prepack` and `compile_norms`); false keeps transformers' forward pass."""

    @field_validator("batch_size", mode="before")
    @classmethod
    def _rows_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            rows = int(value)
        except (TypeError, ValueError):
            rows = 0
        if rows < 1 or str(rows) != str(value).strip():
            raise ValueError(f"give a whole number of rows (1 or more) or auto, not {value!r}")
        return rows


def _hf_identity(name: str, adapter: str | None) -> tuple[str, str | None]:
    resolved = resolve_model(name)
    identity = f"{resolved.identity}+{adapter_identity(adapter)}" if adapter else resolved.identity
    return identity, resolved.path


def _hf_numerics(options: dict[str, Any]) -> str:
    """`cuda-bfloat16`, `cpu-bfloat16`...; "" for float32 on the CPU, the numerics of stores made before dtype and
    device were part of the identity."""
    _require_hf("a local model")
    from emprobe.model._providers._numerics import pick_numerics

    device, dtype = pick_numerics(options.get("dtype", "auto"))
    return "" if (device, dtype) == ("cpu", "float32") else f"{device}-{dtype}"


def _require_hf(what: str) -> None:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        raise EmprobeError(f"{what} runs with transformers, which needs the hf extra: pip install 'emprobe[hf]'")


def _hf_load(ref: ModelRef) -> Backend:
    _require_hf(f"model {ref.spec!r}")
    from emprobe.model._providers.hf import HFBackend

    return HFBackend(ref)


def _http_identity(name: str, adapter: str | None) -> tuple[str, str | None]:
    from emprobe.model._providers.openai_compat import endpoint_identity

    if adapter:
        raise EmprobeError(f"model openai-compat:{name}: adapters cannot be applied to a served model; serve "
                           "them merged or as a separate model name")
    return endpoint_identity(name), None


def _http_load(ref: ModelRef) -> Backend:
    from emprobe.model._providers.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(ref)


def _http_options() -> type[BaseModel]:
    from emprobe.model._providers.openai_compat import EndpointOptions

    return EndpointOptions


register_backend(DEFAULT_BACKEND, BackendEntry(load=_hf_load, identity=_hf_identity, options=HFOptions,
                                               numerics=_hf_numerics))
register_backend("openai-compat", BackendEntry(load=_http_load, identity=_http_identity, options=_http_options()))
