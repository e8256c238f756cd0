"""Model backends: generate answers and read next-token distributions; `resolve` then `load_backend`."""

from emprobe.model._backend import (
    Backend,
    FinishReason,
    FirstTokenBackend,
    FirstTokenReply,
    GenerationRequest,
    GenerationResult,
    ModelRef,
    ScoringBackend,
    status_of,
)
from emprobe.model._pool import BackendPool
from emprobe.model._registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendEntry,
    HFOptions,
    load_backend,
    parse_options,
    register_backend,
    resolve,
)
from emprobe.model._resolve import BUILTIN_MODELS, ResolvedModel, resolve_model

__all__ = [
    "BACKENDS",
    "BUILTIN_MODELS",
    "DEFAULT_BACKEND",
    "Backend",
    "BackendEntry",
    "BackendPool",
    "FinishReason",
    "FirstTokenBackend",
    "FirstTokenReply",
    "GenerationRequest",
    "GenerationResult",
    "HFOptions",
    "ModelRef",
    "ResolvedModel",
    "ScoringBackend",
    "load_backend",
    "parse_options",
    "register_backend",
    "resolve",
    "resolve_model",
    "status_of",
]
