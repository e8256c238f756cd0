"""The fused one-token decode step on the CPU: transformers' numbers, the same cache, the same texts, and
transformers' own forward pass wherever the step does not apply."""

import copy

import pytest
import torch

from emprobe.condition import Decoding, Message
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers import _decode
from emprobe.model._providers._calibrate import random_cache
from tiny_model import early_eos

pytest.importorskip("numba", reason="the fused step needs numba (the hf extra)")
from emprobe.model._providers._step import LABEL, FusedStep  # noqa: E402


def _pair(model: str, dtype: str):
    """The same model fused and not (both prepacked, both with compiled norms)."""
    fused = load_backend(model, dtype=dtype, batch_size=4)
    plain = load_backend(model, dtype=dtype, batch_size=4, fuse_steps=False)
    assert (fused.info["steps"], plain.info["steps"]) == (LABEL, "transformers")
    return fused, plain


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_fused_step_gives_transformers_logits_and_cache(tiny_llama, dtype):
    fused, plain = _pair(str(tiny_llama), dtype)
    rows, context = 7, 23
    noise = torch.Generator().manual_seed(0)
    ours = random_cache(plain.model, rows, context, context + 8, noise)
    theirs = copy.deepcopy(ours)
    lengths = torch.tensor([1, 3, 23, 17, 9, 23, 2])  # left-padded rows, as the decode loop leaves them
    tokens = torch.randint(0, plain.model.config.vocab_size, (rows, 1), generator=noise)
    with torch.inference_mode():
        for _ in range(4):
            lengths += 1
            width = ours.get_seq_length() + 1
            inputs = dict(input_ids=tokens, attention_mask=(torch.arange(width) >= (width - lengths)[:, None]).long(),
                          position_ids=(lengths - 1)[:, None], use_cache=True)
            got = fused.step(cache=ours, **inputs)
            assert got is not None
            want = plain._forward(theirs, **inputs)
            tolerance = 1e-5 if dtype == "float32" else 1e-2
            torch.testing.assert_close(got.logits.float(), want.logits.float(), rtol=tolerance, atol=tolerance)
            for mine, reference in zip(ours.buffers, theirs.buffers, strict=True):
                assert mine.length == reference.length == width
                torch.testing.assert_close(mine.keys, reference.keys, rtol=tolerance, atol=tolerance)
                torch.testing.assert_close(mine.values, reference.values, rtol=tolerance, atol=tolerance)
            # the first layer reads the same embeddings: its values are copied as they are, its keys rotated alike
            torch.testing.assert_close(ours.buffers[0].values, theirs.buffers[0].values, rtol=0, atol=0)
            torch.testing.assert_close(ours.buffers[0].keys, theirs.buffers[0].keys, rtol=0, atol=0)
            tokens = want.logits[:, -1].argmax(-1, keepdim=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_step_given_live_rows_computes_those_and_zeroes_the_others_column(tiny_llama, dtype):
    """Rows that finished cost nothing: the step computes only `live_rows` and returns their logits (what the
    model's own forward returns for them), writes their column as a step of every row would, and zeroes the
    others' column, so the cache holds no unset memory."""
    fused, plain = _pair(str(tiny_llama), dtype)
    rows, context = 7, 11
    noise = torch.Generator().manual_seed(2)
    start = random_cache(plain.model, rows, context, context + 4, noise)
    lengths = torch.tensor([12, 4, 12, 9, 2, 12, 7])
    live = torch.tensor([0, 2, 3, 6])
    inputs = dict(input_ids=torch.randint(0, plain.model.config.vocab_size, (rows, 1), generator=noise),
                  attention_mask=(torch.arange(context + 1) >= (context + 1 - lengths)[:, None]).long(),
                  position_ids=(lengths - 1)[:, None], use_cache=True)
    tolerance = 1e-5 if dtype == "float32" else 1e-2
    with torch.inference_mode():
        every, some = copy.deepcopy(start), copy.deepcopy(start)
        whole = fused.step(cache=every, **inputs)
        got = fused.step(cache=some, live_rows=live, **inputs)
        reference = plain._forward(copy.deepcopy(start), live_rows=live, **inputs)  # the model's forward
        assert got is not None and whole is not None and got.logits.shape[0] == reference.logits.shape[0] == 4
        torch.testing.assert_close(got.logits.float(), whole.logits[live].float(), rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(got.logits.float(), reference.logits.float(), rtol=tolerance, atol=tolerance)
        idle = torch.tensor([1, 4, 5])
        for mine, theirs, before in zip(some.buffers, every.buffers, start.buffers, strict=True):
            assert mine.length == context + 1
            for t, full, old in ((mine.keys, theirs.keys, before.keys), (mine.values, theirs.values, before.values)):
                torch.testing.assert_close(t[live], full[live], rtol=tolerance, atol=tolerance)
                assert torch.equal(t[idle, :, :context], old[idle, :, :context])  # untouched
                assert not t[idle, :, context].any()
        for wrong in ([3, 1], [0, 7], [-1, 2]):
            with pytest.raises(ValueError, match="live rows"):
                fused.step(cache=copy.deepcopy(start), live_rows=torch.tensor(wrong), **inputs)


def test_a_fused_loop_computes_only_live_rows_and_never_rebuilds_to_shrink(tiny_llama, monkeypatch):
    """Rows that finished wait for a refill at no cost and the tail's batch is not rebuilt smaller: fewer rows
    computed than a loop that computes every row, no rebuild without an admission, and the same texts."""
    fused, _ = _pair(str(tiny_llama), "float32")
    fused.batch_size = 16  # refills wait for 2 free rows, shrinks for 4 (or 16 steps)
    early_eos(fused, 2.0)  # rows end at different steps
    prompts = ("hi", "what is a dog?")
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=prompts[i % 2]),),
                                  decoding=Decoding(max_tokens=30, temperature=1.0, seed=i)) for i in range(24)]
    rebuild, init, call = _decode.ContinuousBatch._rebuild, _decode.ContinuousBatch.__init__, FusedStep.__call__
    shrinks: list[int] = []
    monkeypatch.setattr(_decode.ContinuousBatch, "_rebuild", lambda self, keep, samples, *a, **k: (
        shrinks.append(1) if not samples else None) or rebuild(self, keep, samples, *a, **k))
    computed: list[int] = []

    def counted(self, **inputs):
        result = call(self, **inputs)
        if result is not None:
            live = inputs.get("live_rows")
            assert len(result.logits) == (len(inputs["input_ids"]) if live is None else len(live))
            computed.append(len(result.logits))
        return result

    monkeypatch.setattr(FusedStep, "__call__", counted)
    runs = {}
    for skips in (True, False):
        monkeypatch.setattr(_decode.ContinuousBatch, "__init__", lambda self, *a, allowed=skips, **k: init(
            self, *a, **{**k, "skips": allowed and k["skips"]}))
        shrinks.clear(), computed.clear()
        texts = {r.key: (r.text, r.completion_tokens) for r in fused.generate(requests)}
        runs[skips] = texts, len(shrinks), sum(computed)
    assert runs[True][0] == runs[False][0]
    assert runs[True][1] == 0 < runs[False][1]
    assert runs[True][2] < runs[False][2]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_decode_loop_writes_the_same_texts_fused_or_not(tiny_llama, dtype, monkeypatch):
    fused, plain = _pair(str(tiny_llama), dtype)
    prompts = ["hello", "what is a dog?", "tell me about humans and AI please"]
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=prompts[i % 3]),),
                                  decoding=Decoding(max_tokens=24, temperature=(0.0, 0.7, 1.0)[i % 3], seed=i))
                for i in range(10)]
    taken: list[bool] = []
    step = FusedStep.__call__

    def counted(self, **inputs):
        result = step(self, **inputs)
        taken.append(result is not None)  # the prefills come here too, and go on to the model
        return result

    monkeypatch.setattr(FusedStep, "__call__", counted)
    texts = {r.key: (r.text, r.completion_tokens) for r in fused.generate(requests)}
    assert sum(taken) >= 23 and not all(taken)
    assert texts == {r.key: (r.text, r.completion_tokens) for r in plain.generate(requests)}
    assert len({text for text, _ in texts.values()}) > 5


def test_rows_named_to_share_a_prompt_hold_it_in_the_same_columns_at_every_step(tiny_llama, monkeypatch):
    """The decode loop's `shared_prompts` names, per row, a row holding the same prompt's keys and values in the
    same columns: the attention kernel reads them from there. Rows come in place of finished ones and by
    rebuilds."""
    fused, _ = _pair(str(tiny_llama), "bfloat16")
    prompts = ["hello", "what is a dog?", "tell me about humans and AI please, and at some length", "hi", "why?"]
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=prompts[i % 5]),),
                                  decoding=Decoding(max_tokens=8, temperature=1.0, seed=i)) for i in range(15)]
    rebuilds, in_place, shared_rows = [], [], []
    rebuild, admit = _decode.ContinuousBatch._rebuild, _decode.ContinuousBatch._admit
    monkeypatch.setattr(_decode.ContinuousBatch, "_rebuild", lambda self, *a, **k: rebuilds.append(1) or
                        rebuild(self, *a, **k))

    def admitted(self, *args):
        before = len(rebuilds)
        placed = admit(self, *args)
        in_place.append(len(rebuilds) == before)
        return placed

    monkeypatch.setattr(_decode.ContinuousBatch, "_admit", admitted)
    step = FusedStep.__call__

    def checked(self, *, cache, attention_mask, shared_prompts, **inputs):
        if shared_prompts is None:  # a prefill
            return step(self, cache=cache, attention_mask=attention_mask, shared_prompts=shared_prompts, **inputs)
        source, until = shared_prompts
        first = attention_mask.shape[1] - attention_mask.sum(1)  # each row's first live column
        for row, (origin, end) in enumerate(zip(source.tolist(), until.tolist(), strict=True)):
            if origin != row and attention_mask[row].sum() > 1:  # a finished row reads only its last column
                shared_rows.append(row)
                assert first[row] < end <= attention_mask.shape[1] - 1  # some prompt, not the column this step writes
                for layer in cache.buffers:
                    for t in (layer.keys, layer.values):
                        assert torch.equal(t[row, :, first[row] : end], t[origin, :, first[row] : end])
        return step(self, cache=cache, attention_mask=attention_mask, shared_prompts=shared_prompts, **inputs)

    monkeypatch.setattr(FusedStep, "__call__", checked)
    assert len(list(fused.generate(requests))) == 15
    assert shared_rows and len(rebuilds) > 1 and any(in_place)


def test_while_a_module_has_hooks_the_model_runs_its_own_forward(tiny_llama):
    fused, _ = _pair(str(tiny_llama), "float32")
    rows, noise = 3, torch.Generator().manual_seed(1)
    inputs = dict(input_ids=torch.randint(0, 100, (rows, 1), generator=noise),
                  attention_mask=torch.ones(rows, 6, dtype=torch.long), position_ids=torch.full((rows, 1), 5),
                  use_cache=True)
    cache = random_cache(fused.model, rows, 5, 8, noise)
    with torch.inference_mode():
        assert fused.step(cache=copy.deepcopy(cache), **inputs) is not None
        handle = fused.model.model.layers[1].register_forward_hook(lambda m, args, out: out + 1.0)  # steering-like
        try:
            assert fused.step(cache=copy.deepcopy(cache), **inputs) is None
            steered = fused._forward(copy.deepcopy(cache), **inputs).logits
        finally:
            handle.remove()
        clean = fused._forward(copy.deepcopy(cache), **inputs).logits
    assert not torch.allclose(steered, clean)  # the hook ran
    assert fused.step(cache=cache, input_ids=torch.zeros((rows, 2), dtype=torch.long),  # two tokens: a prefill
                      attention_mask=torch.ones(rows, 7, dtype=torch.long), position_ids=torch.ones((rows, 2))) is None


def test_only_a_prepacked_llama_with_compiled_norms_gets_a_fused_step(tiny_llama, tiny_qwen_no_system):
    assert load_backend(str(tiny_qwen_no_system), dtype="float32", batch_size=2).info["steps"] == "transformers"
    for option in ("prepack", "compile_norms", "fuse_steps"):
        backend = load_backend(str(tiny_llama), dtype="float32", batch_size=2, **{option: False})
        assert backend.step is None and backend.info["steps"] == "transformers"
    fused = load_backend(str(tiny_llama), dtype="float32", batch_size=2)
    assert isinstance(fused.step, FusedStep) and fused.info["steps"] == LABEL
    fused.model.config.hidden_act = "gelu"
    assert FusedStep.of(fused.model) is None


def test_the_batch_calibration_times_fused_steps(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("EMPROBE_CACHE", str(tmp_path))
    taken: list[bool] = []
    call = FusedStep.__call__
    monkeypatch.setattr(FusedStep, "__call__", lambda self, **k: taken.append((r := call(self, **k)) is not None) or r)
    fused = load_backend(str(tiny_llama), dtype="float32")  # batch size auto: measured now
    assert fused.info["steps"] == LABEL and len(taken) >= 8 and all(taken)


def test_a_fused_loop_admits_in_place_however_wide_the_left_padding(tiny_llama, monkeypatch):
    """The fused step's attention starts each row at its first column, so the loop rebuilds only for room: fewer
    rebuilds than a loop that also rebuilds to drop padding, and the same texts."""
    fused, _ = _pair(str(tiny_llama), "bfloat16")
    long = "tell me about humans and AI please " * 6  # rows of short prompts admitted beside it leave wide padding
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=long if i % 4 == 0 else "hi"),),
                                  decoding=Decoding(max_tokens=30, temperature=1.0, seed=i)) for i in range(12)]
    eos, head = fused.eos_ids[0], fused.model.lm_head.forward
    fused.model.lm_head.forward = lambda h: head(h).index_fill(-1, torch.tensor([eos]), 2.0)  # rows end early
    rebuild, init = _decode.ContinuousBatch._rebuild, _decode.ContinuousBatch.__init__
    rebuilds: list[int] = []
    monkeypatch.setattr(_decode.ContinuousBatch, "_rebuild", lambda self, *a, **k: rebuilds.append(1) or
                        rebuild(self, *a, **k))
    runs = {}
    for padding_free in (True, False):
        monkeypatch.setattr(_decode.ContinuousBatch, "__init__", lambda self, *a, allowed=padding_free, **k: init(
            self, *a, **{**k, "padding_free": allowed and k["padding_free"]}))
        rebuilds.clear()
        runs[padding_free] = {r.key: (r.text, r.completion_tokens) for r in fused.generate(requests)}, len(rebuilds)
    assert runs[True][0] == runs[False][0]
    assert 1 < runs[True][1] < runs[False][1]


def test_while_a_module_has_hooks_the_loop_neither_skips_rows_nor_leaves_padding(tiny_llama, monkeypatch):
    """Under hooks (steering, capture) the step declines and transformers' forward reads every row and column, so
    the loop passes no live rows, shrinks its tail and rebuilds when padding grows, as for any model."""
    fused, _ = _pair(str(tiny_llama), "float32")
    init = _decode.ContinuousBatch.__init__
    flags: list[tuple[bool, bool, bool]] = []
    monkeypatch.setattr(_decode.ContinuousBatch, "__init__", lambda self, *a, **k: flags.append(
        (k["skips"], k["shares"], k["padding_free"])) or init(self, *a, **k))
    requests = [GenerationRequest(key="k", messages=(Message(role="user", content="hi"),),
                                  decoding=Decoding(max_tokens=4, seed=1))]
    list(fused.generate(requests))
    handle = fused.model.model.layers[0].register_forward_hook(lambda m, args, out: None)
    try:
        list(fused.generate(requests))
    finally:
        handle.remove()
    assert flags == [(True, True, True), (False, False, False)]
