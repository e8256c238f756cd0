"""The local backend's decoding loop: a batch kept full as rows finish (continuous batching), a sampler seeded
per row, and a KV cache that appends into buffers allocated once per rebuild.

Rows are right-aligned: every row's tokens end at the same column, so a row is the last `length` columns of the
cache and its mask follows from its length. A finished row's place is taken by a waiting sample, prefilled once per
distinct prompt and written into that row in place. The cache is rebuilt (compacted, with room for more steps) only
when a new prompt does not fit, and rows are dropped only once nothing is waiting (and never where the forward pass
computes only the live rows).
"""

import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from emprobe.condition import Decoding
from emprobe.model._providers._attention import row_blocks
from emprobe.model._providers._compiled import kernel


class PerRowSampler:
    """Samples each row with its own generator and its own temperature, top_p and top_k, so a sample's text depends
    on its seed and settings, not on its batch or the settings of the rows beside it."""

    block = 256
    """The cumulative sum runs over blocks of the vocabulary first, then inside the chosen block (it is exact)."""

    def __init__(self) -> None:
        self.generators: list[torch.Generator] = []
        self.settings: list[tuple[float, float, int]] = []

    def add(self, seed: int, decoding: Decoding) -> int:
        """Give a new row its generator and settings; returns the row's number."""
        self.generators.append(torch.Generator().manual_seed(seed % (2**63)))
        self.settings.append((decoding.temperature, decoding.top_p, decoding.top_k))
        return len(self.generators) - 1

    def sample(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """One token per row of `logits`; `rows` says whose generator and settings draw for each. Every row is
        warped and drawn on its own, so mixing settings in one batch gives each row what it would get alone."""
        chosen = rows.tolist()
        settings = [self.settings[r] for r in chosen]
        # what to do is decided from the settings on the host: a test on a device tensor waits for the device
        if all(t == 0 for t, _, _ in settings):
            return logits.argmax(-1)
        temperature, top_p, top_k = (torch.tensor(column, device=logits.device)
                                     for column in zip(*settings, strict=True))
        greedy = temperature == 0
        divisors = torch.where(greedy, 1.0, temperature).to(torch.float32)
        scores = logits
        if any(k > 0 or p < 1.0 for _, p, k in settings):
            scores = _truncate(logits.float() / divisors.unsqueeze(-1), top_k, top_p)
            divisors = torch.ones_like(divisors)
        # Inverse-CDF sampling with one uniform draw per row from that row's generator, the rest vectorised.
        draws = torch.tensor([torch.rand(1, generator=self.generators[r]).item() for r in chosen])
        tokens = draw(scores, divisors, draws, self.block)
        return torch.where(greedy, logits.argmax(-1), tokens) if any(t == 0 for t, _, _ in settings) else tokens


def draw(scores: torch.Tensor, divisors: torch.Tensor, draws: torch.Tensor, block: int) -> torch.Tensor:
    """One token per row of `scores` / `divisors` (per row), by the inverse CDF of the row's uniform draw: in one
    compiled pass (`_draw.py`) on a CPU with numba, else by torch, on the scores' device."""
    compiled = _compiled_draw()
    tokens = compiled(scores, divisors, draws, block) if compiled else None
    if tokens is not None:
        return tokens
    warped = scores.float() / divisors.to(scores.device).unsqueeze(-1)
    weights = (warped - warped.amax(-1, keepdim=True)).exp_()
    return _inverse_cdf(weights, draws.to(weights.device), block)


def _compiled_draw() -> Callable[..., torch.Tensor | None] | None:
    """`_draw.draw`, or None without numba."""
    return kernel("_draw", "draw")

CANDIDATES = (256, 4096)
"""Top-p reads a row's largest logits first, then more of them, and sorts the whole vocabulary only for a row whose
nucleus is wider still: a top-k of 256 (4,096) of SmolLM2's 49,152 logits for 256 rows takes 23 (67) ms against 373
for the sort. SmolLM2's nuclei that outgrew 256 (4,096) tokens: none at temperature 0.7 and top-p 0.8; 25% (0.1%)
at 1.0 and 0.95; 46% (0.4%) at 1.3 and 0.8; 93% (62%) at 1.3 and 0.95."""


def _truncate(warped: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """`warped` with what each row's top_k and then top_p drop set to -inf (k 0 and p 1 drop nothing): top-k keeps
    the logits at least the k-th largest, top-p the smallest set of the most likely reaching probability p."""
    inf, vocab = float("-inf"), warped.shape[-1]
    k = top_k.clamp(max=vocab)
    limited = (k > 0).unsqueeze(-1)
    if bool(limited.any()):
        kth = torch.topk(warped, int(k.max()), dim=-1).values.gather(-1, (k - 1).clamp(min=0).unsqueeze(-1))
        warped = warped.masked_fill((warped < kth) & limited, inf)
    todo = (top_p < 1.0).nonzero().squeeze(-1)
    for width in (*CANDIDATES, vocab):
        if not len(todo):
            break
        rows, p = warped[todo], top_p[todo].unsqueeze(-1).to(warped.dtype)
        values, index = torch.topk(rows, min(width, vocab), dim=-1)  # descending; all of it at the last width
        top = values[:, :1]
        probs = (values - top).exp() / (rows - top).exp().sum(-1, keepdim=True)
        before = probs.cumsum(-1) - probs
        # decided where the nucleus ends among these logits (the rest of the row then lies beyond it)
        decided = (before[:, -1] + probs[:, -1] >= p.squeeze(-1)) | (width >= vocab)
        keep = torch.zeros_like(rows, dtype=torch.bool).scatter(-1, index, before < p)
        warped[todo[decided]] = rows[decided].masked_fill(~keep[decided], inf)
        todo = todo[~decided]
    return warped


def _inverse_cdf(weights: torch.Tensor, draws: torch.Tensor, block: int) -> torch.Tensor:
    """The first index whose running sum of unnormalised `weights` exceeds `draws` x the total, per row; the sums
    run over blocks and then within the chosen block, which is much cheaper than one long cumulative sum."""
    rows, vocab = weights.shape
    pad = -vocab % block
    blocks = (torch.nn.functional.pad(weights, (0, pad)) if pad else weights).view(rows, -1, block)
    ends = blocks.sum(-1).cumsum(-1)
    target = (draws * ends[:, -1]).unsqueeze(-1)
    chosen = torch.searchsorted(ends, target, right=True).clamp(max=ends.shape[-1] - 1)
    before = torch.where(chosen > 0, ends.gather(-1, (chosen - 1).clamp(min=0)), torch.zeros_like(target))
    inner = blocks[torch.arange(rows, device=weights.device), chosen.squeeze(-1)].cumsum(-1) + before
    within = torch.searchsorted(inner, target, right=True).clamp(max=block - 1)
    return (chosen * block + within).squeeze(-1).clamp(max=vocab - 1)


class BufferedLayer(DynamicLayer):
    """A KV cache layer that appends into a buffer allocated once, instead of concatenating at every step."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.spare: tuple[torch.Tensor, torch.Tensor] | None = None
        """On a CPU, the key and value buffers the last rebuild replaced, for the next one to write into: their memory
        is mapped already, where fresh memory takes a page fault per 4 KiB at its first write (the first 8 rebuilds
        of 640 first-plot samples at 128 rows on SmolLM2 took 1.6-2.1 s with it, 3.1-3.2 s without). It doubles the
        cache's memory; CUDA's allocator keeps freed memory itself."""
        self.views: dict[str, Any] = {}
        """What a kernel derives from the buffers and keeps between steps (arrays over them); emptied when they are
        replaced, which frees the replaced ones."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self._keys = key_states.new_empty((b, h, self.capacity, d))
            self._values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
            self.views = {}
        end = self.length + key_states.shape[-2]
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.written(end - self.length)
        return self.keys, self.values

    def written(self, columns: int) -> None:
        """Count `columns` more, which the caller has written into the buffers after the current ones."""
        self.length += columns
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def place(self, rows: torch.Tensor, fresh: "BufferedLayer", owner: torch.Tensor) -> None:
        """Write `fresh`'s prefill, expanded to `rows` by `owner`, into those rows, ending at the current column."""
        n = fresh.length
        self._keys[rows, :, self.length - n : self.length] = fresh._keys[owner, :, :n]
        self._values[rows, :, self.length - n : self.length] = fresh._values[owner, :, :n]

    def _unset(self, like: torch.Tensor, which: int, shape: tuple[int, ...]) -> torch.Tensor:
        """A buffer of `shape` with `like`'s dtype and device whose contents are left as they are: the start of the
        spare key (`which` 0) or value (1) buffer where that is large enough, else new memory."""
        spare = self.spare[which] if self.spare is not None else None
        size = math.prod(shape)
        if spare is None or spare.numel() < size or spare.dtype != like.dtype or spare.device != like.device:
            return like.new_empty(shape)
        return spare.view(-1)[:size].view(shape)

    def rebuild(self, keep: torch.Tensor, kept: int, fresh: "BufferedLayer | None", owner: torch.Tensor,
                width: int, capacity: int) -> None:
        """A new buffer: the last `kept` columns of rows `keep` (ascending), then `fresh`'s prefill expanded to rows
        `owner`, all ending at column `width`, with room for `capacity` columns. Padding is zero (attention reads it,
        and masked garbage could be NaN); the room is left unset, as every step writes its column before reading
        it."""
        source = self._keys if self.is_initialized else fresh._keys  # type: ignore[union-attr]
        _, h, _, d = source.shape
        rows = len(keep) + len(owner)
        keys, values = (self._unset(source, which, (rows, h, capacity, d)) for which in range(2))
        for first, last, filled in ((0, len(keep), kept), (len(keep), rows, fresh.length if fresh else 0)):
            keys[first:last, :, : width - filled].zero_()  # left of what is copied in below
            values[first:last, :, : width - filled].zero_()
        was, now = slice(self.length - kept, self.length), slice(width - kept, width)
        for to, at, n in _runs(keep.tolist()):  # slices copy in place; `keep` as an index would copy twice
            keys[to : to + n, :, now] = self._keys[at : at + n, :, was]
            values[to : to + n, :, now] = self._values[at : at + n, :, was]
        if self.is_initialized:
            self.spare = (self._keys, self._values) if self._keys.device.type == "cpu" else None
        else:
            self.lazy_initialization(keys, values)
        self._keys, self._values, self.length, self.capacity = keys, values, width, capacity
        self.views = {}
        if fresh is not None and len(owner):
            self.place(torch.arange(len(keep), rows, device=keys.device), fresh, owner)
        self.keys, self.values = keys[:, :, :width], values[:, :, :width]


def _runs(rows: list[int]) -> list[tuple[int, int, int]]:
    """`rows` (ascending) as runs of consecutive rows: (position in `rows`, first row, length) each."""
    runs: list[tuple[int, int, int]] = []
    for position, row in enumerate(rows):
        if runs and runs[-1][1] + runs[-1][2] == row:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((position, row, 1))
    return runs


class BufferedCache(Cache):
    """A cache of `BufferedLayer`s (`buffers`), each with room for `capacity` positions."""

    def __init__(self, layers: int, capacity: int):
        self.buffers = [BufferedLayer(capacity) for _ in range(layers)]
        super().__init__(layers=list(self.buffers))


Forward = Callable[..., Any]
"""The model's forward pass with the cache keyword already bound."""


class ContinuousBatch:
    """Decodes `prompts` (token ids, one per sample, samples of one prompt adjacent) with at most `size` rows at
    once, admitting waiting samples as rows finish. `run` (once per instance) yields (sample index, token ids,
    stopped at EOS)."""

    def __init__(self, forward: Forward, layers: int, device: str, pad_id: int, eos_ids: list[int],
                 max_tokens: int, size: int, on_prefill: Callable[[bool], None] | None = None, blocks: bool = False,
                 shares: bool = False, padding_free: bool = False, skips: bool = False):
        self.forward, self.layers, self.device, self.pad_id = forward, layers, device, pad_id
        self.blocks = blocks
        """Whether the model's attention takes `row_blocks` (see `_attention.py`)."""
        self.shares = shares
        """Whether `forward` takes `shared_prompts` (see `shared_prompts`)."""
        self.padding_free = padding_free
        """Whether a decode step's cost does not grow with the columns left of every row (its attention starts each
        row at its first column): then admissions go in place however wide that padding gets."""
        self.skips = skips
        """Whether `forward` takes `live_rows` and computes only those rows: then rows that finished cost nothing
        while they wait for a refill, and the tail's batch is never rebuilt smaller."""
        self.eos = set(eos_ids)
        self.max_tokens, self.size = max_tokens, size
        self.on_prefill = on_prefill or (lambda _: None)
        self.refill_at = max(1, size // 8)
        """Free rows that trigger an admission while samples wait."""
        self.room = max_tokens + max_tokens // 2
        """Columns a rebuild leaves free: a row needs at most `max_tokens`; the rest lets later rows in in place."""
        self.cache: BufferedCache | None = None
        self.lengths = torch.zeros(0, dtype=torch.long)
        self.tokens = torch.zeros(0, dtype=torch.long)  # batch row -> the token it feeds the next step
        self.rows: list[int] = []  # batch row -> sample index (a finished row keeps its last sample's)
        self.origins: list[tuple[int, int]] = []  # batch row -> (admission, prompt within it) its prompt came from
        self.prompt_lengths = torch.zeros(0, dtype=torch.long)
        self.admissions = 0
        self.sources: torch.Tensor | None = None  # see `shared_prompts`; None: to be found again
        self.done = torch.zeros(0, dtype=torch.bool)  # rows with nothing left to generate (finished or free)
        self.recent: tuple[list[int], BufferedCache, torch.Tensor] | None = None
        """The last admission's last prompt with its prefill (one row) and last logits: samples of one prompt are
        adjacent, so the next admission often starts with that prompt, and takes its prefill from here."""

    def run(self, prompts: list[list[int]], seeds: list[int], decodings: list[Decoding]
            ) -> Iterator[tuple[int, list[int], bool]]:
        """Each sample drawn with its seed and its decoding's temperature, top_p and top_k (they may differ)."""
        sampler = PerRowSampler()
        draw_of: dict[int, int] = {}  # sample index -> its generator in the sampler
        pending = deque(range(len(prompts)))
        out: dict[int, list[int]] = {}

        def sampled(rows: torch.Tensor, logits: torch.Tensor) -> Iterator[tuple[int, list[int], bool]]:
            """A token for each of `rows` from its logits; the samples that end with it."""
            tokens = sampler.sample(logits, torch.tensor([draw_of[self.rows[row]] for row in rows.tolist()])).cpu()
            self.tokens[rows] = tokens
            for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
                sample = self.rows[row]
                out[sample].append(token)
                stopped = token in self.eos
                if stopped or len(out[sample]) == self.max_tokens:
                    self.done[row] = True
                    yield sample, out.pop(sample), stopped

        idle = 0
        while pending or not self.done.all():
            free = int(self.done.sum()) + self.size - len(self.rows)
            if pending and (free >= self.refill_at or self.done.all()):
                chosen = [pending.popleft() for _ in range(min(free, len(pending)))]
                for i in chosen:
                    out[i], draw_of[i] = [], sampler.add(seeds[i], decodings[i])
                yield from sampled(*self._admit(chosen, [prompts[i] for i in chosen]))
                idle = 0
            elif (not self.skips and not pending and self.done.any()
                  and (self.done.float().mean() >= 0.25 or idle >= 16)):
                self._rebuild((~self.done).nonzero().squeeze(-1), [], [])  # shrink the tail's batch
                idle = 0
            if self.done.all():
                continue
            assert self.cache is not None
            assert self.cache.get_seq_length() < self.cache.buffers[0].capacity, "every live row was given room"
            self.lengths += 1
            width = self.cache.get_seq_length() + 1
            # a finished row waiting for a refill reads only the column it writes (if it is computed at all)
            mask = torch.arange(width) >= (width - torch.where(self.done, 1, self.lengths))[:, None]
            live = (~self.done).nonzero().squeeze(-1)
            extra: dict[str, Any] = {"row_blocks": row_blocks(self.lengths, ~self.done, width)} if self.blocks else {}
            if self.shares:
                extra["shared_prompts"] = self.shared_prompts(width)
            if self.skips and len(live) < len(self.done):
                extra["live_rows"] = live
            result = self.forward(input_ids=self.tokens[:, None].to(self.device),
                                  attention_mask=mask.long().to(self.device),
                                  position_ids=(self.lengths - 1)[:, None].to(self.device), use_cache=True,
                                  cache=self.cache, **extra)
            logits = result.logits[:, -1]  # the live rows' where `live_rows` was passed, else every row's
            yield from sampled(live, logits if len(logits) == len(live) else logits[live.to(logits.device)])
            idle += 1

    def shared_prompts(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, a row holding the same prompt's keys and values in the same columns (the first row placed from
        the same prefill's row; often itself), and the column where the row's prompt ends, in a step `width`
        columns wide: a kernel may read every row's prompt from its source's copy, so the rows of one prompt share
        what they read."""
        if self.sources is None:
            first: dict[tuple[int, int], int] = {}
            self.sources = torch.tensor([first.setdefault(origin, row) for row, origin in enumerate(self.origins)],
                                        dtype=torch.long)
        return self.sources, width - self.lengths + self.prompt_lengths

    def _admit(self, samples: list[int], admitted: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the admitted samples in free rows (prefilled once per distinct prompt), in place when their prompts
        and answers fit the buffer and (unless `padding_free`) under a quarter of its columns are left of every row,
        else by a rebuild that also drops the finished rows and those columns: their rows and their prefills' last
        logits."""
        prompts: list[list[int]] = []
        owner: list[int] = []
        for ids in admitted:
            if not prompts or prompts[-1] != ids:
                prompts.append(ids)
            owner.append(len(prompts) - 1)
        fresh, logits = self._prefilled(prompts)
        logits = logits[torch.tensor(owner, device=logits.device)]
        width = self.cache.get_seq_length() if self.cache else 0
        needed = max([fresh.buffers[0].length, *self.lengths[~self.done].tolist()])
        fits = (self.cache is not None and needed <= width and width + self.max_tokens <= self.cache.buffers[0].capacity
                and (self.padding_free or width - needed <= width // 4))  # else attention reads every column
        finished = self.done.nonzero().squeeze(-1)
        if not fits or len(samples) > len(finished):
            self._rebuild((~self.done).nonzero().squeeze(-1), samples, admitted, fresh, owner)
            return torch.arange(len(self.rows) - len(samples), len(self.rows)), logits
        assert self.cache is not None
        slots = finished[: len(samples)]
        owners, places = torch.tensor(owner, device=self.device), slots.to(self.device)
        for layer, new in zip(self.cache.buffers, fresh.buffers, strict=True):
            layer.place(places, new, owners)
        self.lengths[slots] = self.prompt_lengths[slots] = torch.tensor([len(ids) for ids in admitted])
        self.done[slots] = False
        self.admissions, self.sources = self.admissions + 1, None
        for slot, sample, prompt in zip(slots.tolist(), samples, owner, strict=True):
            self.rows[slot], self.origins[slot] = sample, (self.admissions, prompt)
        return slots, logits

    def _rebuild(self, keep: torch.Tensor, samples: list[int], admitted: list[list[int]],
                 fresh: BufferedCache | None = None, owner: list[int] | None = None) -> None:
        """A compact cache: the rows `keep`, then the admitted samples, with `room` columns to grow."""
        kept = int(self.lengths[keep].max()) if len(keep) else 0
        width = max(kept, fresh.buffers[0].length if fresh else 0)
        self.cache = self.cache or BufferedCache(self.layers, 0)
        keep_dev, owners = keep.to(self.device), torch.tensor(owner or [], dtype=torch.long, device=self.device)
        for i, layer in enumerate(self.cache.buffers):
            layer.rebuild(keep_dev, kept, fresh.buffers[i] if fresh else None, owners, width, width + self.room)
        self.tokens = torch.cat([self.tokens[keep], torch.zeros(len(samples), dtype=torch.long)])
        admitted_lengths = torch.tensor([len(ids) for ids in admitted], dtype=torch.long)
        self.lengths = torch.cat([self.lengths[keep], admitted_lengths])
        self.prompt_lengths = torch.cat([self.prompt_lengths[keep], admitted_lengths])
        self.admissions, self.sources = self.admissions + 1, None
        self.rows = [self.rows[k] for k in keep.tolist()] + samples
        self.origins = [self.origins[k] for k in keep.tolist()] + [(self.admissions, o) for o in owner or []]
        self.done = torch.zeros(len(self.rows), dtype=torch.bool)

    def _prefilled(self, prompts: list[list[int]]) -> tuple[BufferedCache, torch.Tensor]:
        """The cache and last logits of distinct `prompts`, one row each: the last admission's last prompt copied
        from `recent`, the others prefilled now. On SmolLM2-135M, 64 samples of 8 prompts at 16 rows prefilled 16
        prompts without this, and those prefills took as long as 20 decode steps."""
        if self.recent is None or prompts[0] != self.recent[0]:
            fresh, logits = self._prefill(prompts)
        elif len(prompts) == 1:
            return self.recent[1], self.recent[2]  # read, never written: placing and rebuilding copy from it
        else:
            cache, made = self._prefill(prompts[1:])
            fresh, logits = _merged([(self.recent[1], self.recent[2], 0, len(prompts[0]))] +
                                    [(cache, made, row, len(ids)) for row, ids in enumerate(prompts[1:])], self.layers)
        last = (fresh, logits) if len(prompts) == 1 else _merged(
            [(fresh, logits, len(prompts) - 1, len(prompts[-1]))], self.layers)
        self.recent = (prompts[-1], *last)
        return fresh, logits

    def _prefill(self, prompts: list[list[int]]) -> tuple[BufferedCache, torch.Tensor]:
        """One left-padded forward pass over distinct prompts: their cache and last logits."""
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = BufferedCache(self.layers, width)
        self.on_prefill(True)
        try:
            result = self.forward(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                  position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1,
                                  cache=cache)
        finally:
            self.on_prefill(False)
        return cache, result.logits[:, -1]


def _merged(parts: list[tuple[BufferedCache, torch.Tensor, int, int]], layers: int
            ) -> tuple[BufferedCache, torch.Tensor]:
    """One prefill cache of the rows `parts` name (a cache, its logits, the row, the row's prompt length): each
    prompt's columns right-aligned, zero to their left, as wide as the longest prompt."""
    width = max(length for *_, length in parts)
    out = BufferedCache(layers, width)
    for i, layer in enumerate(out.buffers):
        first = parts[0][0].buffers[i]
        keys = first._keys.new_zeros((len(parts), first._keys.shape[1], width, first._keys.shape[3]))
        values = first._values.new_zeros((len(parts), first._values.shape[1], width, first._values.shape[3]))
        for row, (cache, _, source, n) in enumerate(parts):
            end = cache.buffers[i].length
            keys[row, :, width - n :] = cache.buffers[i]._keys[source, :, end - n : end]
            values[row, :, width - n :] = cache.buffers[i]._values[source, :, end - n : end]
        layer.update(keys, values)
    return out, torch.stack([logits[row] for _, logits, row, _ in parts])
