"""Local generation and scoring with transformers: batched, seeded per sample, with prefix-cached scoring."""

import copy
import inspect
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from functools import cached_property
from itertools import groupby
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import Cache, DynamicLayer

from emprobe.condition import Decoding, Message
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.model._backend import GenerationRequest, GenerationResult, ModelRef
from emprobe.model._providers._intervene import Intervener
from emprobe.model._resolve import materialize
from emprobe.system import cpu_has_bf16, free_cpus

_SENTINEL = "\u2063emprobe-system\u2063"


class HFBackend:
    """A causal LM from a local folder, GGUF file, built-in name or cached hub id, optionally with a LoRA adapter."""

    def __init__(self, ref: ModelRef):
        assert ref.location is not None, "the hf backend resolves every model to a location"
        folder = materialize(ref.location, ref.identity)
        adapter, batch_size = ref.adapter, ref.options.get("batch_size", 64)
        self.device, dtype_name = pick_numerics(ref.options.get("dtype", "auto"))
        self.dtype = getattr(torch, dtype_name)
        self.threads = ref.options.get("threads") or free_cpus()
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.chat_template is None:
            raise EmprobeError(f"model {ref.spec!r} has no chat template; emprobe only evaluates chat models")
        loaded: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        self.model: Any = loaded.to(self.device).eval()
        self.identity = ref.identity
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).eval()
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.system_mode = "native" if self._template_keeps_system() else "merged"
        self.info = {"dtype": dtype_name, "device": self.device, "threads": str(torch.get_num_threads()),
                     "system_prompt": self.system_mode, "model": ref.spec, "adapter": adapter or ""}
        self._prefix_cache: dict[str, tuple[int, object]] = {}
        # transformers renamed `past_key_values` to `cache` during 5.x; accept either.
        params = inspect.signature(self.model.get_base_model().forward if adapter else self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def close(self) -> None:
        """Drop the weights and caches so their memory can be reclaimed."""
        self._prefix_cache.clear()
        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()

    # ---- prompts -------------------------------------------------------------------------------

    def chat_text(self, messages: tuple[Message, ...], thinking: bool | None = None) -> str:
        """Apply the model's chat template; a system prompt is merged into the first user turn if unsupported;
        `thinking` sets the template's `enable_thinking` switch (one line if it has none)."""
        turns = [m.model_dump() for m in messages]
        if self.system_mode == "merged" and turns and turns[0]["role"] == "system":
            system = turns.pop(0)["content"]
            turns[0] = {**turns[0], "content": f"{system}\n\n{turns[0]['content']}"}
        switch = {}
        if thinking is not None:
            if not self.thinking_switch:
                raise EmprobeError(f"model {self.info['model']!r}: its chat template has no thinking switch "
                                   "(enable_thinking), so `thinking:` cannot turn reasoning on or off")
            switch = {"enable_thinking": thinking}
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, **switch)

    @cached_property
    def thinking_switch(self) -> bool:
        """Whether the chat template reads `enable_thinking` (it renders differently with it on and off)."""
        turns = [{"role": "user", "content": "hi"}]
        on, off = (self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True,
                                                      enable_thinking=value) for value in (True, False))
        return on != off

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _template_keeps_system(self) -> bool:
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "hi"}],
                tokenize=False, add_generation_prompt=True,
            )
        except Exception:  # templates without a system role often raise
            return False
        return _SENTINEL in text

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Generate in batches grouped by decoding and prompt length, all samples of a prompt together."""
        encoded = []
        for request in requests:
            ids = self.token_ids(self.chat_text(request.messages, request.thinking))
            encoded.append((request, ids))
        # Same decoding and intervention together, then by prompt length; samples of one prompt stay adjacent.
        def group_of(item: tuple[GenerationRequest, list[int]]) -> tuple:
            intervention = item[0].intervention
            return _decoding_key(item[0].decoding), stable_hash(intervention.key()) if intervention else ""

        encoded.sort(key=lambda item: (group_of(item), len(item[1]), item[1]))
        for _, group in groupby(encoded, key=group_of):
            items = list(group)
            intervention = items[0][0].intervention
            with Intervener(self.model, intervention) if intervention else nullcontext() as hooks:
                for start in range(0, len(items), self.batch_size):
                    yield from self._generate_batch(items[start : start + self.batch_size], hooks)

    @torch.inference_mode()
    def _generate_batch(self, items: list[tuple[GenerationRequest, list[int]]],
                        hooks: Intervener | None = None) -> list[GenerationResult]:
        """Prefill each distinct prompt once (left padding), give every sample of it a copy of that prompt's
        KV cache, then decode one token per step, dropping rows as they finish. `hooks`, when given, learns
        which passes generate (after the prefill)."""
        decoding = items[0][0].decoding
        rows = len(items)
        prompts: list[list[int]] = []
        owner = []  # for each row, the index of its prompt (samples of one prompt are adjacent)
        for _, ids in items:
            if not prompts or prompts[-1] != ids:
                prompts.append(ids)
            owner.append(len(prompts) - 1)
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        sampler = PerRowSampler(decoding, [request.decoding.seed for request, _ in items])
        cache = Cache(layers=[BufferedLayer(width + decoding.max_tokens)
                              for _ in range(self.model.config.get_text_config().num_hidden_layers)])
        if hooks is not None:
            hooks.generating = False
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        if hooks is not None:
            hooks.generating = True
        if len(prompts) < rows:  # every sample row starts from its prompt's prefill
            rows_of = torch.tensor(owner)
            cache.batch_select_indices(rows_of.to(self.device))
            out.logits, mask, positions = out.logits[rows_of.to(self.device)], mask[rows_of], positions[rows_of]
        live = torch.arange(rows)  # which original row each live row is
        generated: list[list[int]] = [[] for _ in range(rows)]
        stopped = [False] * rows
        eos = torch.tensor(self.eos_ids)
        next_pos, mask = positions[:, -1] + 1, mask.to(self.device)
        for step in range(decoding.max_tokens):
            tokens = sampler.sample(out.logits[:, -1], live).cpu()
            for row, token in zip(live.tolist(), tokens.tolist(), strict=True):
                generated[row].append(token)
            done = torch.isin(tokens, eos)
            for row in live[done].tolist():
                stopped[row] = True
            if step == decoding.max_tokens - 1 or done.all():
                break
            if done.float().mean() >= 0.25 or (done.any() and step % 16 == 15):
                keep = (~done).nonzero().squeeze(-1)  # drop finished rows now and then (a copy of the cache)
                cache.batch_select_indices(keep.to(self.device))
                live, tokens, next_pos, mask, done = live[keep], tokens[keep], next_pos[keep], mask[keep], done[keep]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=mask.device)], -1)
            out = self.model(input_ids=tokens[:, None].to(self.device), attention_mask=mask,
                             position_ids=next_pos[:, None].to(self.device), use_cache=True,
                             **{self._cache_kw: cache})
            next_pos = next_pos + 1
        results = []
        for row, (request, ids) in enumerate(items):
            used = generated[row]
            if stopped[row]:
                used = used[: next(i for i, t in enumerate(used) if t in self.eos_ids) + 1]
            text = self.tokenizer.decode(used[:-1] if stopped[row] else used, skip_special_tokens=True)
            results.append(GenerationResult(
                key=request.key, text=text.strip(), finish_reason="stop" if stopped[row] else "length",
                prompt_tokens=len(ids), completion_tokens=len(used),
            ))
        return results

    # ---- scoring ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def next_token_logprobs(
        self, prefix: str, suffixes: list[str], branches: list[tuple[int, ...]], token_ids: list[int]
    ) -> list[list[list[float]]]:
        """Log-probs of `token_ids` after prefix + suffix + branch; the prefix's KV cache is computed once."""
        prefix_len, prefix_cache = self._prefix(prefix)
        out: list[list[list[float]]] = []
        step = max(1, self.batch_size // 4)
        for start in range(0, len(suffixes), step):
            out.extend(self._score_batch(prefix_len, prefix_cache, suffixes[start : start + step], branches,
                                         token_ids))
        return out

    def _prefix(self, prefix: str) -> tuple[int, object]:
        if prefix not in self._prefix_cache:
            ids = torch.tensor([self.token_ids(prefix)], device=self.device)
            cache = _cache_of(self.model(input_ids=ids, use_cache=True))
            if len(self._prefix_cache) > 8:
                self._prefix_cache.clear()
            self._prefix_cache[prefix] = (ids.shape[1], cache)
        return self._prefix_cache[prefix]

    def _score_batch(self, prefix_len, prefix_cache, suffixes, branches, token_ids):
        encoded = [self.token_ids(s) for s in suffixes]
        rows, width = len(encoded), max(len(e) for e in encoded)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, e in enumerate(encoded):  # pad between prefix and suffix so every row ends together
            ids[r, width - len(e) :] = torch.tensor(e)
            mask[r, prefix_len + width - len(e) :] = 1
        positions = (prefix_len + mask[:, prefix_len:].cumsum(-1) - 1).clamp(min=prefix_len)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        wanted = torch.tensor(token_ids, device=self.device)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)[:, wanted]
        result: list[list[list[float]]] = [[[] for _ in branches] for _ in range(rows)]
        tails = [b for b in branches if b]
        for r in range(rows):
            for bi, branch in enumerate(branches):
                if not branch:
                    result[r][bi] = first[r].tolist()
        if tails:
            self._score_branches(_cache_of(out), mask, positions, branches, wanted, result)
        return result

    def _score_branches(self, cache, mask, positions, branches, wanted, result):
        """Score every branch of every row in one pass: the branches share the row's cache as a token tree.

        Branch tokens are laid side by side, each attending to the row's prompt and to its own branch's
        earlier tokens only (a 4D mask), so no cache is copied whatever the number of branches.
        """
        rows, kv = mask.shape
        nodes: dict[tuple[int, ...], int] = {}  # branch prefix -> position in the laid-out tokens
        for branch in branches:
            for depth in range(1, len(branch) + 1):
                nodes.setdefault(branch[:depth], len(nodes))
        order = sorted(nodes, key=lambda node: nodes[node])
        width = len(order)
        ids = torch.tensor([node[-1] for node in order]).expand(rows, width)
        tree = torch.zeros((width, width), dtype=torch.bool)
        for node, i in nodes.items():
            for depth in range(1, len(node) + 1):
                tree[i, nodes[node[:depth]]] = True
        full = torch.cat([mask.bool()[:, None, None, :].expand(rows, 1, width, kv),
                          tree.expand(rows, 1, width, width)], -1)
        depths = torch.tensor([len(node) for node in order])
        pos = positions[:, -1:] + depths
        out = self.model(input_ids=ids.to(self.device), attention_mask=full.to(self.device),
                         position_ids=pos.to(self.device), use_cache=False, **{self._cache_kw: cache})
        logprobs = torch.log_softmax(out.logits.float(), -1)[..., wanted]
        for r in range(rows):
            for bi, branch in enumerate(branches):
                if branch:
                    result[r][bi] = logprobs[r, nodes[branch]].tolist()


class PerRowSampler:
    """Samples each row with its own generator, so a sample's text depends on its seed, not its batch."""

    def __init__(self, decoding: Decoding, seeds: list[int]):
        self.decoding = decoding
        self.generators = [torch.Generator().manual_seed(seed % (2**63)) for seed in seeds]

    def sample(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """One token per row of `logits`; `rows` says whose generator draws for each."""
        d = self.decoding
        if d.temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / d.temperature
        if d.top_k:
            kth = torch.topk(logits, min(d.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if d.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cum = torch.softmax(sorted_logits, -1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, -1) >= d.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        # Inverse-CDF sampling: one uniform draw per row from that row's generator, the rest vectorised.
        cdf = torch.softmax(logits, -1).cumsum(-1)
        draws = torch.tensor([[torch.rand(1, generator=self.generators[r]).item()] for r in rows.tolist()],
                             device=cdf.device)
        return torch.searchsorted(cdf, draws * cdf[:, -1:], right=True).clamp(max=cdf.shape[-1] - 1).squeeze(-1)


class BufferedLayer(DynamicLayer):
    """A KV cache layer that appends into a buffer allocated once, instead of concatenating at every step."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self._keys = key_states.new_empty((b, h, self.capacity, d))
            self._values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        end = self.length + key_states.shape[-2]
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _decoding_key(d: Decoding) -> tuple:
    return (d.temperature, d.top_p, d.top_k, d.max_tokens)


def pick_numerics(dtype: str) -> tuple[str, str]:
    """(device, dtype name) for a `dtype` option: `auto` is bfloat16 on CUDA and on CPUs with bfloat16 units
    (AVX-512 BF16 or AMX), float32 on other CPUs."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, "bfloat16" if device == "cuda" or cpu_has_bf16() else "float32"
    return device, dtype


def _eos_ids(tokenizer, generation_config) -> list[int]:
    ids = generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([] if ids is None else [ids])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise EmprobeError("the model defines no end-of-sequence token")
    return ids
