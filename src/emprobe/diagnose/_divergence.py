"""Token-level divergence between two models on stored answers: each answer teacher-forced through both (one pass
each, same token ids), per answer token KL(model || reference) over the vocabulary and the log-prob gap."""

from collections.abc import Callable
from typing import Any

from emprobe.diagnose._forward import by_length, encode, forced
from emprobe.errors import EmprobeError
from emprobe.store import Divergence, Store


def check_same_tokens(model: Any, reference: Any) -> None:
    """One line when the two models do not share a tokenizer: their answers' token ids would mean different text."""
    if model.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise EmprobeError(f"{model.identity} and {reference.identity} have different tokenizers; token-level "
                           "divergence needs the same vocabulary")


def diverge_run(db: Store, run_id: str, model: Any, reference: Any, rows: int,
                progress: Callable[[int], None] = lambda n: None) -> list[Divergence]:
    """Every answered sample of the run through both models, in sample-id order, stored chunk by chunk."""
    check_same_tokens(model, reference)
    out: list[Divergence] = []
    for chunk in db.answered(run_id):
        encoded = [encode(model, s.messages, s.answer, s.thinking) for s in chunk]
        done: dict[int, Divergence] = {}
        for batch in by_length(encoded, rows):
            group = [encoded[i] for i in batch]
            for i, a, b in zip(batch, forced(model, group), forced(reference, group), strict=True):
                if a.logprobs.shape != b.logprobs.shape:
                    raise EmprobeError(f"{model.identity} and {reference.identity} have output layers of different "
                                       f"widths ({a.logprobs.shape[-1]} and {b.logprobs.shape[-1]})")
                kl = (a.logprobs.exp() * (a.logprobs - b.logprobs)).sum(-1).clamp(min=0)
                gap = a.token_logprobs - b.token_logprobs
                done[i] = Divergence(sample_id=chunk[i].sample_id,
                                     tokens=[model.tokenizer.decode([t]) for t in a.tokens.tolist()],
                                     kl=kl.tolist(), gap=gap.tolist())
            progress(len(batch))
        ordered = [done[i] for i in range(len(chunk))]
        db.save_divergences(run_id, model.identity, reference.identity, ordered)
        out.extend(ordered)
    return out


def top_tokens(rows: list[Divergence], count: int) -> list[tuple[Divergence, int]]:
    """The (answer, token index) pairs with the largest KL."""
    flat = [(d, i) for d in rows for i in range(len(d.kl))]
    return sorted(flat, key=lambda item: -item[0].kl[item[1]])[:count]

