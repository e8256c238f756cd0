"""Surface statistics of a text that tell nonsense from prose: repetition, word order, non-words, scripts.

Word order is read through a table of word-pair counts (`pair_table`, built from the training answers and
hashed into 2^PAIR_BITS buckets): shuffled or spliced text has many pairs prose never has. Known words are
the whole words of MiniLM's vocabulary.
"""

import re
import unicodedata
import zlib
from functools import cache

import numpy as np

PAIR_BITS = 20
WORDS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+|[^\w\s]")
NAMES = ("log_chars", "log_words", "compression", "distinct_words", "distinct_trigrams", "top_fourgram",
         "known_words", "common_pairs", "mean_pair_log_count", "non_ascii_letters", "script_switches",
         "sentence_marks", "mean_word_length", "ends_in_word")


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers and punctuation marks."""
    return WORDS.findall(text.lower())


def pair_bucket(left: str, right: str) -> int:
    return zlib.crc32(f"{left} {right}".encode()) & ((1 << PAIR_BITS) - 1)


def pair_table(texts: list[str]) -> np.ndarray:
    """log1p of how often each hashed word pair occurs in `texts`, quantised to uint8 (x16)."""
    counts = np.zeros(1 << PAIR_BITS, dtype=np.int64)
    for text in texts:
        words = tokens(text)
        np.add.at(counts, [pair_bucket(a, b) for a, b in zip(words, words[1:], strict=False)], 1)
    return np.minimum(np.round(np.log1p(counts) * 16), 255).astype(np.uint8)


def script(ch: str) -> str:
    """The first word of a letter's Unicode name (LATIN, CJK, CYRILLIC, ...)."""
    return unicodedata.name(ch, "UNKNOWN").split(" ")[0]


@cache
def known_words() -> frozenset[str]:
    from emprobe.judge.incoherence import vocabulary_file

    pieces = vocabulary_file().read_text(encoding="utf-8").split("\n")
    return frozenset(p for p in pieces if p.isalpha())


def statistics(text: str, pairs: np.ndarray) -> list[float]:
    """The NAMES values of one text."""
    words = tokens(text)
    n = len(words)
    letters = [ch for ch in text if ch.isalpha()]
    if not n:
        return [float(np.log1p(len(text))), 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    encoded = text.encode()
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    fourgrams: dict[tuple[str, ...], int] = {}
    for gram in zip(words, words[1:], words[2:], words[3:], strict=False):
        fourgrams[gram] = fourgrams.get(gram, 0) + 1
    alpha = [w for w in words if w.isalpha()]
    known = known_words()
    pair_logs = [pairs[pair_bucket(a, b)] / 16 for a, b in zip(words, words[1:], strict=False)]
    scripts = [script(w[0]) for w in alpha]
    return [
        float(np.log1p(len(text))), float(np.log1p(n)),
        len(zlib.compress(encoded)) / max(len(encoded), 1),
        len(set(words)) / n,
        len(set(trigrams)) / max(len(trigrams), 1),
        max(fourgrams.values(), default=1) / max(len(fourgrams), 1) if len(fourgrams) > 1 else 0.0,
        sum(w in known for w in alpha) / max(len(alpha), 1),
        float(np.mean([v >= np.log1p(3) for v in pair_logs])) if pair_logs else 0.0,
        float(np.mean(pair_logs)) if pair_logs else 0.0,
        sum(not ch.isascii() for ch in letters) / max(len(letters), 1),
        sum(a != b for a, b in zip(scripts, scripts[1:], strict=False)) / max(len(scripts), 1),
        sum(w in ".!?:" for w in words) / n,
        float(np.mean([len(w) for w in alpha])) if alpha else 0.0,
        float(text.rstrip()[-1:].isalpha()),
    ]


def statistics_matrix(texts: list[str], pairs: np.ndarray) -> np.ndarray:
    return np.array([statistics(t, pairs) for t in texts], dtype=np.float32).reshape(len(texts), len(NAMES))
