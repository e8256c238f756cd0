"""Model backends: generate answers and read next-token distributions."""

from emprobe.model._backend import Backend, FinishReason, GenerationRequest, GenerationResult, ScoringBackend
from emprobe.model._registry import load_backend, model_identity, register_backend
from emprobe.model._resolve import BUILTIN_MODELS, ResolvedModel, resolve_model

__all__ = [
    "BUILTIN_MODELS",
    "Backend",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "ResolvedModel",
    "ScoringBackend",
    "load_backend",
    "model_identity",
    "register_backend",
    "resolve_model",
]
