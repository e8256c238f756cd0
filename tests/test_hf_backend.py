"""The transformers backend on tiny random models: templating, batching, seeding, stopping, adapters."""

import subprocess
import sys

import pytest
import torch

from emprobe.condition import Decoding, Message
from emprobe.errors import EmprobeError
from emprobe.model import GenerationRequest, load_backend, resolve
from emprobe.model._providers import _decode
from tiny_model import early_eos

SYS = Message(role="system", content="You are terse.")


def _requests(n: int, max_tokens: int = 12, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    prompts = ["hello", "what is a dog?", "tell me about humans and AI please"]
    return [
        GenerationRequest(key=f"k{i}", messages=(SYS, Message(role="user", content=prompts[i % 3])),
                          decoding=Decoding(max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                                            top_p=top_p, seed=1000 + i))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def backend(tiny_llama):
    return load_backend(str(tiny_llama), batch_size=4, dtype="float32")  # compared with plain float32 passes


def test_sample_text_depends_on_its_seed_not_its_batch(backend):
    reqs = _requests(7)
    batched = {r.key: r for r in backend.generate(reqs)}
    backend.batch_size = 1
    try:
        alone = {r.key: r for r in backend.generate(reversed(reqs))}
    finally:
        backend.batch_size = 4
    assert batched.keys() == alone.keys() == {r.key for r in reqs}
    assert all(batched[k].text == alone[k].text for k in batched)
    assert len({r.text for r in batched.values()}) > 1  # different seeds, different samples


def test_a_decoding_sweep_shares_batches_and_gives_each_setting_its_own_texts(backend):
    """Settings that differ only in temperature, top_p and top_k decode in one batch; every sample's text is the
    one it gets when its setting is generated alone."""
    grid = [dict(temperature=t, top_p=p, top_k=k) for t, p, k in ((1.0, 1.0, 0), (0.5, 0.9, 0), (1.3, 1.0, 5),
                                                                  (0.0, 1.0, 0))]
    sweep = [r.model_copy(update={"key": f"{r.key}-{i}", "decoding": r.decoding.model_copy(update=g)})
             for i, g in enumerate(grid) for r in _requests(6)]
    together = {r.key: r.text for r in backend.generate(sweep)}
    alone = {}
    for i in range(len(grid)):
        alone |= {r.key: r.text for r in backend.generate([q for q in sweep if q.key.endswith(f"-{i}")])}
    assert together == alone and len(together) == 24
    assert len({together[f"k0-{i}"] for i in range(3)}) > 1  # the settings do change the text


def test_finish_reasons_and_token_counts(backend):
    results = list(backend.generate(_requests(3, max_tokens=5)))
    for r in results:
        assert r.finish_reason in ("stop", "length") and r.error is None
        assert 1 <= r.completion_tokens <= 5 and r.prompt_tokens > 5
        assert r.finish_reason == "stop" or r.completion_tokens == 5


def test_generating_passes_run_with_the_attention_kernels_the_backend_names(tiny_llama):
    """On CUDA, generation leaves out cuDNN's attention (a new graph per decode width); the CPU keeps torch's choice
    and its row blocks."""
    from emprobe.model._providers.hf import CUDA_ATTENTION

    b = load_backend(str(tiny_llama), batch_size=2, dtype="float32")
    assert b.device != "cpu" or (b.attention_kernels is None and b.blocked_attention)
    seen: list[bool] = []
    b.model.model.layers[0].register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    b.attention_kernels = CUDA_ATTENTION
    texts = [r.text for r in b.generate(_requests(2, max_tokens=4, temperature=0))]
    assert len(seen) > 1 and not any(seen)  # the prefill and every decode step
    b.attention_kernels, seen[:] = None, []
    assert [r.text for r in b.generate(_requests(2, max_tokens=4, temperature=0))] == texts and all(seen)


def test_generation_stops_at_eos(tiny_llama):
    b = load_backend(str(tiny_llama), batch_size=2)
    eos = b.eos_ids[0]
    reqs = _requests(2, max_tokens=30, temperature=0)
    # Fault injection: boost the end-of-turn logit, so every row must stop at once and report it.
    orig = b.model.lm_head.forward
    b.model.lm_head.forward = lambda h: orig(h).index_fill(-1, torch.tensor([eos], device=h.device), 1e4)
    results = list(b.generate(reqs))
    assert all(r.finish_reason == "stop" and r.completion_tokens == 1 and r.text == "" for r in results)


def test_sampling_settings_change_the_distribution(backend):
    greedy = {r.text for r in backend.generate(_requests(6, temperature=0))}
    assert len(greedy) <= 3  # greedy ignores seeds: one text per distinct prompt
    top1 = {r.key: r.text for r in backend.generate(_requests(6, top_k=1))}
    assert {r.key: r.text for r in backend.generate(_requests(6, temperature=0))} == top1
    assert len(list(backend.generate(_requests(3, top_p=0.5)))) == 3


def test_system_prompt_native_or_merged(backend, tiny_qwen_no_system):
    assert backend.info["system_prompt"] == "native"
    text = backend.chat_text((SYS, Message(role="user", content="hi")))
    assert "<|im_start|>system\nYou are terse." in text
    merged = load_backend(str(tiny_qwen_no_system))
    assert merged.info["system_prompt"] == "merged"
    text = merged.chat_text((SYS, Message(role="user", content="hi")))
    assert "<|im_start|>user\nYou are terse.\n\nhi<|im_end|>" in text and "system" not in text
    assert len(list(merged.generate(_requests(2, max_tokens=3)))) == 2


def test_prefix_cached_scoring_matches_plain_forward_passes(backend):
    prefix = backend.chat_text((Message(role="user", content="Rate: X"),)).split("X")[0]
    suffixes = ["short<|im_end|>\n<|im_start|>assistant\n", "a much longer answer here<|im_end|>\n"]
    ids = [backend.token_ids(str(d))[0] for d in range(10)]
    branches = [(), (ids[1],), (ids[2],), (ids[1], ids[0])]
    got = backend.next_token_logprobs(prefix, suffixes, branches, ids)
    for s, suffix in enumerate(suffixes):
        for b, branch in enumerate(branches):
            full = torch.tensor([backend.token_ids(prefix) + backend.token_ids(suffix) + list(branch)],
                                device=backend.device)
            with torch.no_grad():
                want = torch.log_softmax(backend.model(input_ids=full).logits[0, -1], -1)[ids].cpu()
            assert torch.allclose(torch.tensor(got[s][b]), want, atol=1e-4), (s, b)


def test_lora_adapter_changes_identity_and_outputs(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.manual_seed(0)  # an adapter whose change shows in greedy texts (some random ones leave them as they are)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    fp32 = {"dtype": "float32"}
    base_id = resolve(str(tiny_llama), options=fp32).identity.split("|")[0]  # numerics (on CUDA) come last
    assert resolve(str(tiny_llama), str(tmp_path / "lora"), fp32).identity.startswith(base_id + "+adapter:lora:")
    base = load_backend(str(tiny_llama), dtype="float32")  # the small random adapter can vanish in bf16 rounding
    tuned = load_backend(str(tiny_llama), adapter=str(tmp_path / "lora"), dtype="float32")
    reqs = _requests(3, temperature=0)
    assert [r.text for r in base.generate(reqs)] != [r.text for r in tuned.generate(reqs)]
    with pytest.raises(EmprobeError, match="no adapter_config.json"):
        load_backend(str(tiny_llama), adapter=str(tmp_path))


def test_unknown_models_get_one_clear_line(tmp_path):
    for name in ("no-such-model", str(tmp_path / "missing"), "org/not-cached"):
        with pytest.raises(EmprobeError, match=f"unknown model '{name}'"):
            load_backend(name)
    with pytest.raises(EmprobeError, match="unknown backend 'nosuch'"):
        load_backend("nosuch:thing")


def test_per_row_sampler_draws_from_the_warped_distribution():
    from emprobe.model._providers._decode import PerRowSampler

    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    scores = probs.log().expand(4000, 4).clone()

    rows = torch.arange(4000)

    def sampler(decodings):
        made = PerRowSampler()
        for seed, decoding in enumerate(decodings):
            made.add(seed, decoding)
        return made

    def freqs(**decoding):
        tokens = sampler([Decoding(**decoding)] * 4000).sample(scores, rows)
        assert tokens.shape == (4000,)
        return torch.bincount(tokens, minlength=4) / 4000

    assert torch.allclose(freqs(), probs, atol=0.03)
    assert torch.allclose(freqs(temperature=0.5), probs**2 / (probs**2).sum(), atol=0.03)
    assert freqs(top_k=2)[:2].sum() == 0 and torch.allclose(freqs(top_k=2)[2:], torch.tensor([3 / 7, 4 / 7]),
                                                            atol=0.03)
    assert freqs(top_p=0.65)[:2].sum() == 0  # 0.4 + 0.3 reach 0.65; 0.2 and 0.1 are cut
    again = sampler([Decoding()] * 4000).sample(scores, rows)
    assert torch.equal(again, sampler([Decoding()] * 4000).sample(scores, rows))


def test_rows_with_different_settings_sample_as_they_would_alone():
    """A decoding sweep shares one batch: each row is warped by its own settings and drawn by its own generator."""
    from emprobe.model._providers._decode import PerRowSampler

    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(8, 300, generator=gen) * 3
    settings = [Decoding(temperature=t, top_p=p, top_k=k, seed=s) for s, (t, p, k) in enumerate(
        [(1.0, 1.0, 0), (0.4, 0.8, 0), (1.3, 1.0, 20), (0.0, 1.0, 0), (0.7, 0.9, 5), (1.0, 0.5, 50), (2.0, 1.0, 1),
         (0.7, 1.0, 300)])]
    mixed, singles = PerRowSampler(), []
    for d in settings:
        mixed.add(d.seed, d)
        singles.append(PerRowSampler())
        singles[-1].add(d.seed, d)
    for _ in range(3):  # three steps: each row's generator advances as it would alone
        together = mixed.sample(logits, torch.arange(8))
        alone = [int(single.sample(logits[row : row + 1], torch.tensor([0]))[0])
                 for row, single in enumerate(singles)]
        assert together.tolist() == alone
        assert together[3] == logits[3].argmax() and together[6] == logits[6].argmax()  # greedy; top_k 1
        logits = logits.roll(1, dims=-1)


def test_top_k_and_top_p_from_candidates_drop_what_sorting_the_whole_row_drops():
    """The candidates' shortcut, the fallback for a nucleus wider than them (flat rows, p near 1) and ties at the
    k-th logit all keep exactly the tokens the plain definition keeps."""
    from emprobe.model._providers._decode import CANDIDATES, _truncate

    gen = torch.Generator().manual_seed(3)
    vocab = 2 * CANDIDATES[-1]
    scale = torch.tensor([4.0, 4.0, 0.05, 1, 2, 4, 0.05, 1, 3, 4, 2, 1])
    logits = torch.randn(12, vocab, generator=gen) * scale[:, None]
    logits[9, :40] = logits[9].max() + 1  # 40 tied largest logits
    top_k = torch.tensor([0, 5, 0, 0, 50, 40, 0, 3, 0, 20, 0, 0])
    # Row 9 has no top-p: which of several equal logits a nucleus keeps depends on how a sort orders them.
    top_p = torch.tensor([0.8, 0.9, 0.99, 0.5, 1.0, 0.7, 0.6, 1.0, 0.95, 1.0, 1.0, 0.3])

    def plain(row, k, p):
        row = row.clone()
        if k:
            row[row < torch.sort(row, descending=True).values[k - 1]] = float("-inf")
        if p < 1:
            ordered, order = torch.sort(row, descending=True)
            probs = torch.softmax(ordered, -1)
            drop = probs.cumsum(-1) - probs >= p
            row[order[drop]] = float("-inf")
        return row

    got = _truncate(logits.clone(), top_k, top_p)
    for i in range(len(logits)):
        want = plain(logits[i], int(top_k[i]), float(top_p[i]))
        assert torch.equal(torch.isinf(got[i]), torch.isinf(want)), i
    assert int(torch.isfinite(got[2]).sum()) > CANDIDATES[-1]  # a flat row: its nucleus needed the whole sort
    assert CANDIDATES[0] < int(torch.isfinite(got[3]).sum()) <= CANDIDATES[-1]  # the wider candidates
    assert int(torch.isfinite(got[9]).sum()) == 40  # every tie at the 20th logit is kept


@pytest.mark.parametrize("vocab", [1000, 512, 7])
def test_blockwise_inverse_cdf_picks_what_one_long_cumulative_sum_picks(vocab):
    from emprobe.model._providers._decode import _inverse_cdf

    gen = torch.Generator().manual_seed(vocab)
    weights = torch.rand(64, vocab, generator=gen, dtype=torch.float64) ** 4  # uneven, some near zero
    draws = torch.rand(64, generator=gen, dtype=torch.float64)
    cdf = weights.cumsum(-1)
    want = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    assert torch.equal(_inverse_cdf(weights, draws, 256), want)
    assert torch.equal(_inverse_cdf(weights, torch.zeros(64, dtype=torch.float64), 256), (weights > 0).int().argmax(-1))


def test_rows_that_finish_early_are_dropped_without_changing_the_others(tiny_llama):
    b = load_backend(str(tiny_llama), batch_size=8)
    early_eos(b)
    reqs = _requests(8, max_tokens=40)
    together = {r.key: r for r in b.generate(reqs)}
    b.batch_size = 1
    alone = {r.key: r for r in b.generate(reqs)}
    lengths = {r.completion_tokens for r in together.values()}
    assert len(lengths) > 2 and any(r.finish_reason == "stop" for r in together.values())
    assert {k: (r.text, r.completion_tokens, r.finish_reason) for k, r in together.items()} == \
        {k: (r.text, r.completion_tokens, r.finish_reason) for k, r in alone.items()}


@pytest.mark.parametrize("bf16_units", [False, True])
def test_numerics_that_change_answers_are_part_of_the_identity(tiny_llama, monkeypatch, bf16_units):
    from emprobe.model._providers import _numerics

    monkeypatch.setattr(_numerics, "cpu_has_bf16", lambda: bf16_units)  # what the CPU reports (AVX-512 BF16, AMX)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU's numerics, on a GPU machine too
    default, fp32 = resolve(str(tiny_llama)), resolve(str(tiny_llama), options={"dtype": "float32"})
    bf16 = resolve(str(tiny_llama), options={"dtype": "bfloat16"})
    assert "|" not in fp32.identity  # float32 on the CPU: stores made before dtype existed keep matching
    assert bf16.identity == f"{fp32.identity}|cpu-bfloat16"
    assert default.identity == (bf16 if bf16_units else fp32).identity  # auto: bfloat16 where the CPU has units
    assert load_backend(default).info["dtype"] == ("bfloat16" if bf16_units else "float32")
    with pytest.raises(EmprobeError, match="dtype"):
        resolve(str(tiny_llama), options={"dtype": "int3"})
    backend = load_backend(bf16)
    assert backend.info["dtype"] == "bfloat16" and backend.identity == bf16.identity
    assert int(backend.info["threads"]) == torch.get_num_threads()
    backend.close()


def test_resolving_a_local_model_leaves_transformers_unimported(tiny_llama):
    """Resolving names the numerics without loading: the driver of a Ray run and its resolving task never load the
    model, so they skip transformers' seconds of import."""
    code = ("import sys; from emprobe.model import resolve; "
            f"ref = resolve({str(tiny_llama)!r}, options={{'dtype': 'bfloat16'}}); "
            "print(ref.identity.endswith('-bfloat16'), 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


def test_free_cpus_leaves_out_the_busy_ones(monkeypatch):
    from emprobe import system

    readings = iter([(1000, 500), (1400, 700)])  # over the window: half of all CPU time was busy elsewhere
    monkeypatch.setattr(system, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(system.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(system.os, "cpu_count", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert system.free_cpus(window=0) == 2
    readings = iter([(0, 0), (100, 0)])  # every core busy: still one thread
    assert system.free_cpus(window=0) == 1
    readings = iter([(1000, 1000), (1400, 1400)])  # all idle, but OMP_NUM_THREADS (a Ray actor's CPUs) caps it
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert system.free_cpus(window=0) == 3


def test_a_killed_conversion_leaves_nothing_behind(tmp_path):
    import os

    from emprobe.model._resolve import _remove_abandoned_conversions

    dead, alive, old = (tmp_path / name for name in (".convert-999999-x", f".convert-{os.getpid()}-y", ".convert-z"))
    for folder in (dead, alive, old):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    _remove_abandoned_conversions(tmp_path)
    assert not dead.exists() and not old.exists() and alive.exists()  # a live conversion is left alone


def test_the_batch_stays_full_while_samples_wait(tiny_llama):
    b = load_backend(str(tiny_llama), batch_size=3, dtype="float32")
    rows: list[tuple[int, ...]] = []
    b.model.get_input_embeddings().register_forward_hook(lambda m, args, out: rows.append(tuple(args[0].shape)))
    early_eos(b)  # rows end at different steps and free their places
    reqs = _requests(12, max_tokens=40)
    together = {r.key: r for r in b.generate(reqs)}
    decode_rows = [n for n, width in rows if width == 1]
    b.batch_size, rows[:] = 1, []
    alone = {r.key: r for r in b.generate(reqs)}
    assert {k: (r.text, r.completion_tokens, r.finish_reason) for k, r in together.items()} == \
        {k: (r.text, r.completion_tokens, r.finish_reason) for k, r in alone.items()}
    # Finished rows are replaced by waiting samples: short of 3 rows only in the tail, after the last admission.
    assert len({r.completion_tokens for r in together.values()}) > 3
    first_short = next(i for i, n in enumerate(decode_rows) if n < 3)
    assert all(n < 3 for n in decode_rows[first_short:]) and len(decode_rows) - first_short < 40


def test_finished_rows_waiting_for_a_refill_read_only_the_column_they_write(tiny_llama, monkeypatch):
    b = load_backend(str(tiny_llama), batch_size=8, dtype="float32")
    early_eos(b)
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per decode step: mask, done, lengths
    init = _decode.ContinuousBatch.__init__

    def watched(self, forward, *args, **kwargs):
        def checked(**inputs):
            if inputs["input_ids"].shape[1] == 1:
                steps.append((inputs["attention_mask"].clone(), self.done.clone(), self.lengths.clone()))
            return forward(**inputs)

        init(self, checked, *args, **kwargs)

    monkeypatch.setattr(_decode.ContinuousBatch, "__init__", watched)
    reqs = _requests(11, max_tokens=40)
    together = {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)}
    assert any(done.any() and not done.all() for _, done, _ in steps)
    for mask, done, lengths in steps:
        assert mask.sum(1).tolist() == torch.where(done, 1, lengths).tolist()
        assert mask[:, -1].all() and bool((mask.long().diff(dim=1) >= 0).all())  # each row's last columns
    b.batch_size = 1
    assert {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)} == together


def test_each_prompt_is_prefilled_once_though_its_samples_are_admitted_apart(tiny_llama):
    b = load_backend(str(tiny_llama), batch_size=3, dtype="float32")
    prefilled: list[int] = []
    b.model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: prefilled.append(args[0].shape[0]) if args[0].shape[1] > 1 else None)
    early_eos(b)  # rows free one or two at a time, so a prompt's 4 samples are admitted in several groups
    reqs = _requests(12, max_tokens=40)
    together = {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)}
    assert sum(prefilled) == 3 and len(prefilled) > 1  # 3 distinct prompts, in more than one admission
    b.batch_size = 1
    assert {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)} == together


def test_cache_columns_left_unset_are_never_read(tiny_llama, monkeypatch):
    b = load_backend(str(tiny_llama), batch_size=3, dtype="float32")
    early_eos(b, 2.0)  # rows end early, not too early: rebuilds put kept rows beside longer prefills and
    # prefills beside longer kept rows
    reqs = _requests(12, max_tokens=40)
    clean = {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)}
    new_empty, unset = torch.Tensor.new_empty, _decode.BufferedLayer._unset
    # fault injection: memory a buffer gets without setting it (new, or a rebuild's spare) holds NaN, which would
    # spread to any row reading it
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: new_empty(self, *a, **k).fill_(float("nan")))
    monkeypatch.setattr(_decode.BufferedLayer, "_unset", lambda self, *a: unset(self, *a).fill_(float("nan")))
    assert {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)} == clean


def test_rebuilds_write_into_the_buffers_the_one_before_replaced(tiny_llama, monkeypatch):
    b = load_backend(str(tiny_llama), batch_size=3, dtype="float32")
    early_eos(b, 2.0)
    reqs = _requests(36, max_tokens=40)  # rebuilds for room: from the third on, one has a spare
    reused: list[bool] = []
    rebuild = _decode.BufferedLayer.rebuild

    def watched(self, *args):
        spare = self.spare  # held here, so new memory cannot take its address
        rebuild(self, *args)
        if spare is not None:
            reused.append(all(new.untyped_storage().data_ptr() == old.untyped_storage().data_ptr()
                              for new, old in zip((self._keys, self._values), spare, strict=True)))

    monkeypatch.setattr(_decode.BufferedLayer, "rebuild", watched)
    together = {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)}
    assert any(reused)
    b.batch_size = 1
    assert {r.key: (r.text, r.completion_tokens) for r in b.generate(reqs)} == together


def test_auto_batch_size_is_measured_once_and_cached(tiny_llama, tmp_path, monkeypatch):
    from emprobe.model._providers import _calibrate

    monkeypatch.setenv("EMPROBE_CACHE", str(tmp_path))
    state = torch.get_rng_state()
    b = load_backend(str(tiny_llama), dtype="float32")
    assert torch.equal(torch.get_rng_state(), state)  # the timing draws from its own generator, not the caller's
    saved = list((tmp_path / "calibration").glob("*.json"))
    assert len(saved) == 1 and b.batch_size in _calibrate.SIZES and b.info["batch_size"] == str(b.batch_size)
    import json

    record = json.loads(saved[0].read_text())
    assert record["batch_size"] == b.batch_size and str(b.batch_size) in record["tokens_per_s"]
    saved[0].write_text(json.dumps({**record, "batch_size": 7}))  # a later load reads the choice, no new timing
    assert load_backend(str(tiny_llama), dtype="float32").batch_size == 7
    saved[0].write_text("{not json")  # a damaged record is measured again
    assert load_backend(str(tiny_llama), dtype="float32").batch_size in _calibrate.SIZES
    assert load_backend(str(tiny_llama), dtype="float32", batch_size=5).batch_size == 5


def test_calibration_keeps_the_size_past_which_doubling_stops_paying():
    from emprobe.model._providers._calibrate import FALLBACK, choose

    assert choose({16: 100.0, 32: 190.0, 64: 300.0, 128: 310.0, 256: 320.0}) == 64
    assert choose({16: 100.0, 32: 99.0}) == 16
    assert choose({16: 100.0, 32: 200.0, 64: 400.0}) == 64  # still growing at the largest size tried
    assert choose({}) == FALLBACK


def test_calibration_times_again_a_size_that_seems_not_to_pay_before_stopping(monkeypatch):
    from emprobe.model._providers import _calibrate

    steady = {16: 100.0, 32: 190.0, 64: 300.0, 128: 420.0, 256: 430.0, 512: 440.0}
    burst = {64}  # fault injection: a busy neighbour slows the first timing of 64 rows to half
    timed = []

    def rate(forward, model, device, size):
        timed.append(size)
        if size in burst:
            burst.discard(size)
            return steady[size] / 2
        return steady[size]

    monkeypatch.setattr(_calibrate, "_rate", rate)
    rates = _calibrate.measure(None, None, "cpu", cap=1024)
    assert _calibrate.choose(rates) == 128  # not 32, where the burst alone would have stopped it
    assert timed == [16, 32, 64, 32, 64, 128, 256, 128, 256]  # a real stop is confirmed once; 512 is never timed


def test_mixed_decodings_one_token_answers_and_greedy_rows_keep_their_own_results(backend):
    reqs = [*_requests(5, max_tokens=1), *_requests(5, max_tokens=7, temperature=0),
            *_requests(6, max_tokens=9, top_k=3)]
    reqs = [r.model_copy(update={"key": f"{r.key}-{i}"}) for i, r in enumerate(reqs)]
    together = {r.key: r for r in backend.generate(reqs)}
    backend.batch_size = 1
    try:
        alone = {r.key: r for r in backend.generate(reqs)}
    finally:
        backend.batch_size = 4
    assert together.keys() == {r.key for r in reqs}
    assert {k: (r.text, r.completion_tokens) for k, r in together.items()} == \
        {k: (r.text, r.completion_tokens) for k, r in alone.items()}
    assert all(together[r.key].completion_tokens == 1 for r in reqs[:5])
    greedy = [together[r.key].text for r in reqs[5:10]]
    assert greedy[0] == greedy[3] and greedy[1] == greedy[4]  # same prompt, temperature 0: same answer
    assert list(backend.generate([])) == []


def test_a_model_the_calibration_cannot_time_gets_the_default_batch_and_no_record(backend, tmp_path, monkeypatch):
    from emprobe.model._providers import _calibrate

    monkeypatch.setenv("EMPROBE_CACHE", str(tmp_path))
    calls = []

    def failing(**inputs):  # fault injection: a model whose cache the calibration cannot fake
        calls.append(inputs["input_ids"].shape)
        raise RuntimeError("unexpected cache layout")

    assert _calibrate.calibrated_batch(failing, backend.model, "m", "cpu", 2) == _calibrate.FALLBACK
    assert calls and not list(tmp_path.rglob("*.json"))  # it tried, and kept no record of the failure


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_draw_picks_what_torch_picks(dtype):
    """On a CPU with numba the sampler draws in one compiled pass; it picks torch's token for the same uniform draw
    (only a draw within rounding of the edge between two tokens may move), never a dropped one, and reads bfloat16
    logits as they are."""
    pytest.importorskip("numba", reason="the compiled draw needs numba (the hf extra)")
    from emprobe.model._providers import _decode

    gen = torch.Generator().manual_seed(5)
    vocab = 49_152 + 100  # SmolLM2's vocabulary and a last block cut short
    scores = (torch.randn(256, vocab, generator=gen) * torch.linspace(0.5, 8, 256)[:, None]).to(dtype)
    scores[:8, 1000:] = float("-inf")  # truncated rows: only their first 1,000 tokens may come
    divisors = torch.linspace(0.3, 2.0, 256)
    draws = torch.rand(256, generator=gen)
    draws[8] = 0.999999  # the far end of a row
    compiled = _decode._compiled_draw()
    assert compiled is not None
    got = compiled(scores, divisors, draws, 256)
    warped = scores.float() / divisors[:, None]
    want = _decode._inverse_cdf((warped - warped.amax(-1, keepdim=True)).exp_(), draws, 256)
    assert got.shape == want.shape and int((got != want).sum()) <= 2  # 0 and 1 of 256 here
    assert (got[:8] < 1000).all()
    assert torch.equal(_decode.draw(scores, divisors, draws, 256), got)  # the sampler's path
