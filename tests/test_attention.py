"""Decode-step attention in blocks of rows, each over the columns its live rows use: transformers' results."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from emprobe.condition import Decoding, Message
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers import _attention
from emprobe.model._providers._attention import ROWS, blocked_sdpa, row_blocks
from emprobe.model._providers._compiled import kernel
from tiny_model import early_eos


class _Module(torch.nn.Module):
    num_key_value_groups, is_causal = 3, True


def test_blocks_start_at_their_longest_live_row_and_keep_the_last_column():
    lengths = torch.tensor([5, 2, 9, 3] + [4] * (ROWS - 4) + [7, 1, 12])
    live = torch.ones(len(lengths), dtype=torch.bool)
    live[2] = False  # a finished row's columns are not read for it
    assert row_blocks(lengths, live, 20) == [(0, ROWS, 20 - 5), (ROWS, ROWS + 3, 20 - 12)]
    assert row_blocks(lengths, torch.zeros_like(live), 20) == [(0, ROWS, 19), (ROWS, ROWS + 3, 19)]
    assert row_blocks(torch.full((2 * ROWS,), 18), torch.ones(2 * ROWS, dtype=torch.bool), 20) == []  # 10% to skip


KERNELS = [(torch.float32, "onepass"), (torch.float32, "matmul_step"), (torch.bfloat16, "onepass"),
           (torch.bfloat16, "sdpa_step")]
"""The kernel each precision runs: the one-pass kernel where numba imports, else two batched matmuls in float32 and
torch's SDPA in bfloat16."""

CLOSE = {torch.float32: {"atol": 1e-6, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 5e-2}}
"""How close a step comes to transformers' SDPA in its own precision: other orders of sums."""


def _kernels_seen(monkeypatch, kernel: str) -> list[str]:
    """The names of the step kernels `blocked_sdpa` calls from now on; as without numba unless `kernel` is
    `onepass`."""
    used: list[str] = []
    if kernel != "onepass":
        monkeypatch.setattr(_attention, "_onepass", lambda: None)
    onepass = _attention._onepass()
    if onepass is not None:
        counted = lambda *a: used.append("onepass") or onepass(*a)  # noqa: E731
        monkeypatch.setattr(_attention, "_onepass", lambda: counted)
    for name in ("matmul_step", "sdpa_step"):
        step = getattr(_attention, name)
        monkeypatch.setattr(_attention, name, lambda *a, step=step, name=name: used.append(name) or step(*a))
    return used


@pytest.mark.parametrize(("dtype", "kernel"), KERNELS)
def test_blocked_attention_gives_transformers_sdpa_for_live_rows(dtype, kernel, monkeypatch):
    if kernel == "onepass":
        pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    gen = torch.Generator().manual_seed(0)
    rows, width = 2 * ROWS + 5, 40
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    lengths[: 2 * ROWS] = torch.randint(1, width // 2, (2 * ROWS,), generator=gen)  # two blocks of short rows
    live = torch.rand(rows, generator=gen) > 0.2
    mask = (torch.arange(width) >= (width - lengths)[:, None])[:, None, None, :]
    query = torch.randn(rows, 9, 1, 16, generator=gen).to(dtype)
    # keys and values are views of wider buffers, as the decode loop's cache leaves them
    key, value = (torch.randn(rows, 3, width + 7, 16, generator=gen).to(dtype)[:, :, :width] for _ in range(2))
    want, _ = sdpa_attention_forward(_Module(), query, key, value, mask, scaling=0.3)
    used = _kernels_seen(monkeypatch, kernel)
    blocks = row_blocks(lengths, live, width)
    assert blocks and blocks[0][2] >= width // 2
    got, _ = blocked_sdpa(_Module(), query, key, value, mask, scaling=0.3, row_blocks=blocks)
    assert got.shape == want.shape and got.dtype == dtype
    torch.testing.assert_close(got[live], want[live], **CLOSE[dtype])
    assert torch.isfinite(got).all()  # finished rows read their last column at least: no NaN to spread
    whole, _ = blocked_sdpa(_Module(), query, key, value, mask, scaling=0.3)  # no blocks: every column, every row
    torch.testing.assert_close(whole, want, **CLOSE[dtype])
    assert set(used) == {kernel}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads"), [(9, 3), (8, 2), (4, 4), (12, 2)])
def test_one_pass_kernel_reads_any_group_of_heads_from_views_of_the_cache(heads, kv_heads, dtype, monkeypatch):
    pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    gen = torch.Generator().manual_seed(heads)
    rows, width = 37, 40
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    mask = (torch.arange(width) >= (width - lengths)[:, None])[:, None, None, :]
    query = torch.randn(rows, heads, 1, 16, generator=gen).to(dtype)
    # rows and columns cut out of a larger buffer on every side, as a row block of the cache is
    key, value = (torch.randn(rows + 3, kv_heads, width + 7, 16, generator=gen, dtype=dtype)
                  [2 : rows + 2, :, 3 : width + 3] for _ in range(2))
    module = _Module()
    module.num_key_value_groups = heads // kv_heads
    # the sums are float32 in both precisions: a bfloat16 step is the float32 step of the same numbers, rounded once
    want, _ = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, scaling=0.3)
    used = _kernels_seen(monkeypatch, "onepass")
    got, _ = blocked_sdpa(module, query, key, value, mask, scaling=0.3)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=1e-6, rtol=1e-5 if dtype == torch.float32 else 2**-8)
    # keys laid out another way (head and column swapped) are not the cache's: the kernel without numba reads them
    swapped = torch.randn(rows, width, kv_heads, 16, generator=gen, dtype=dtype).transpose(1, 2)
    want, _ = sdpa_attention_forward(module, query, swapped, value, mask, scaling=0.3)
    got, _ = blocked_sdpa(module, query, swapped, value, mask, scaling=0.3)
    torch.testing.assert_close(got, want, **CLOSE[dtype])
    assert used == ["onepass", "onepass", "matmul_step" if dtype == torch.float32 else "sdpa_step"]


@pytest.mark.parametrize(("dtype", "kernel"), KERNELS)
def test_a_step_whose_mask_was_dropped_reads_every_column_with_the_same_kernel(dtype, kernel, monkeypatch):
    """transformers passes no mask when every row reads every column (rows of one length, as when calibrating)."""
    if kernel == "onepass":
        pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(40, 9, 1, 16, generator=gen, dtype=dtype)
    key, value = (torch.randn(40, 3, 30, 16, generator=gen, dtype=dtype) for _ in range(2))
    want, _ = sdpa_attention_forward(_Module(), query, key, value, None, scaling=0.3)
    used = _kernels_seen(monkeypatch, kernel)
    got, _ = blocked_sdpa(_Module(), query, key, value, None, scaling=0.3)
    torch.testing.assert_close(got, want, **CLOSE[dtype])
    assert used == [kernel]


@pytest.mark.parametrize("vectors", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [64, 128])
def test_one_pass_kernel_at_head_sizes_of_64_and_128_with_and_without_its_vector_code(dim, dtype, vectors,
                                                                                        monkeypatch):
    """Head sizes of 64 and 128 take the vector code where the CPU has AVX-512 (`VECTORS`); both ways give
    the float32 attention of the same numbers, whatever the CPU this runs on."""
    pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    from emprobe.model._providers import _onepass

    monkeypatch.setattr(_onepass, "VECTORS", vectors)
    gen = torch.Generator().manual_seed(dim)
    rows, width = 11, 2 * _onepass.CHUNK + 21
    mask = torch.rand(rows, width, generator=gen) > 0.25  # holes anywhere; chunks of every fill
    mask[0], mask[1] = False, torch.arange(width) >= width - 17  # one live column; one more than 16
    mask[0, 5] = True
    query = torch.randn(rows, 9, 1, dim, generator=gen).to(dtype)
    key, value = (torch.randn(rows + 3, 3, width + 7, dim, generator=gen).to(dtype)[2 : rows + 2, :, 3 : width + 3]
                  for _ in range(2))
    module = _Module()
    want, _ = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask[:, None, None, :],
                                     scaling=0.2)
    used = _kernels_seen(monkeypatch, "onepass")
    got, _ = blocked_sdpa(module, query, key, value, mask[:, None, None, :], scaling=0.2)
    assert used == ["onepass"] and got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=1e-6, rtol=1e-5 if dtype == torch.float32 else 2**-8)


@pytest.mark.parametrize("vectors", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_of_one_prompt_read_its_keys_and_values_from_their_source_row(dtype, vectors, monkeypatch):
    """With `shared` (source, until), a row's columns before `until` come from its source row's copy: garbage in
    its own copy there changes nothing, and the result is still the attention of the source's numbers."""
    pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    from emprobe.model._providers import _onepass

    monkeypatch.setattr(_onepass, "VECTORS", vectors)
    gen = torch.Generator().manual_seed(5)
    rows, width, dim, prompt = 6, 2 * _onepass.CHUNK + 9, 64, 40
    lengths = torch.tensor([60, prompt + 20, prompt + 20, 30, prompt + 20, 73])
    mask = torch.arange(width) >= (width - lengths)[:, None]
    query = torch.randn(rows, 9, dim, generator=gen).to(dtype)
    key, value = (torch.randn(rows, 3, width, dim, generator=gen).to(dtype) for _ in range(2))
    start = width - prompt - 20
    for t in (key, value):  # rows 1, 2 and 4 hold one prompt's keys and values in the same columns
        t[[2, 4], :, start : start + prompt] = t[1, :, start : start + prompt]
    source = torch.tensor([0, 1, 1, 3, 1, 5])
    until = torch.where(source != torch.arange(rows), start + prompt, 0)
    clean = torch.empty_like(query)
    assert _onepass.attend(query, key, value, mask, 0.2, clean, (source, until))
    want, _ = sdpa_attention_forward(_Module(), query[:, :, None].float(), key.float(), value.float(),
                                     mask[:, None, None, :], scaling=0.2)
    close = {"atol": 1e-6, "rtol": 1e-5 if dtype == torch.float32 else 2**-8}
    torch.testing.assert_close(clean.float(), want[:, 0], **close)
    for t in (key, value):
        t[[2, 4], :, start : start + prompt] = 1e4  # their own copies: never read
    got = torch.empty_like(query)
    assert _onepass.attend(query, key, value, mask, 0.2, got, (source, until))
    assert torch.equal(got, clean)
    unshared = torch.empty_like(query)
    assert _onepass.attend(query, key, value, mask, 0.2, unshared)
    assert not torch.allclose(unshared[[2, 4]].float(), clean[[2, 4]].float())  # the garbage, read without sharing
    with pytest.raises(ValueError, match="shared prompts name 3 and 6 rows for a step of 6"):
        _onepass.attend(query, key, value, mask, 0.2, got, (source[:3], until))


def test_one_pass_kernel_folds_long_rows_chunk_by_chunk(monkeypatch):
    pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    from emprobe.model._providers._onepass import CHUNK

    gen = torch.Generator().manual_seed(1)
    rows, width, dim = 6, 5 * CHUNK + 3, 16
    # holes anywhere in a row (not only left padding), and a row with one live column
    mask = torch.rand(rows, width, generator=gen) > 0.3
    mask[-1] = False
    mask[-1, width // 2] = True
    query = torch.randn(rows, 3, 1, dim, generator=gen)
    key, value = (torch.randn(rows, 1, width, dim, generator=gen) for _ in range(2))
    # scores climb column by column (over about 40), so the maximum moves on in every chunk and most weights fall
    # far below the largest
    key = key + torch.linspace(-3, 5, width)[None, None, :, None] * query.mean(dim=1, keepdim=True).sign()
    module = _Module()
    want, _ = sdpa_attention_forward(module, query, key, value, mask[:, None, None, :], scaling=0.3)
    used = _kernels_seen(monkeypatch, "onepass")
    got, _ = blocked_sdpa(module, query, key, value, mask[:, None, None, :], scaling=0.3)
    torch.testing.assert_close(got, want, **CLOSE[torch.float32])
    assert used == ["onepass"]
    # with the scores reversed the maximum is in the first chunk and every later weight is tiny
    got, _ = blocked_sdpa(module, query, key.flip(2), value.flip(2), mask.flip(1)[:, None, None, :], scaling=0.3)
    want, _ = sdpa_attention_forward(module, query, key.flip(2), value.flip(2), mask.flip(1)[:, None, None, :],
                                     scaling=0.3)
    torch.testing.assert_close(got, want, **CLOSE[torch.float32])


def test_the_kernels_exponential_is_within_3e_7_of_exp():
    pytest.importorskip("numba", reason="the one-pass kernel needs numba (the hf extra)")
    import numba
    import numpy as np

    from emprobe.model._providers._numba_math import exp_parts
    from emprobe.model._providers._onepass import FLAGS

    @numba.njit(fastmath=FLAGS)
    def exps(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            m, n = exp_parts(x[i])
            out[i] = m * np.float32(2.0) ** n
        return out

    x = np.concatenate([-np.random.default_rng(0).uniform(0, 87, 200_000), np.linspace(-1, 0, 10_001)])
    x = x.astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(exps(x) - exact) / exact) < 3e-7
    assert (exps(np.float32([-200.0, -np.inf])) == exps(np.float32([-87.0]))[0]).all()  # clamped: never 0 or NaN


def test_steps_it_does_not_know_are_left_to_transformers(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    query, key, value = (torch.randn(4, heads, 1 if heads == 9 else 6, 8, generator=gen) for heads in (9, 3, 3))
    mask = torch.ones(4, 1, 1, 6, dtype=torch.bool)
    seen = []
    monkeypatch.setattr(_attention, "sdpa_attention_forward", lambda *a, **k: seen.append(sorted(k)) or (None, None))
    blocked_sdpa(_Module(), query, key, value, mask.float(), scaling=0.5)  # an additive mask
    blocked_sdpa(_Module(), query, key, value, mask, scaling=0.5, softcap=30.0)  # a keyword it does not read
    blocked_sdpa(_Module(), query, key, value, mask, dropout=0.1)
    assert seen == [["scaling"], ["scaling", "softcap"], ["dropout"]]
    got, _ = blocked_sdpa(_Module(), query, key, value, mask, scaling=0.5, position_ids=None, use_cache=True)
    assert len(seen) == 3 and got.shape == (4, 1, 9, 8)


def test_the_decode_loop_uses_blocks_and_keeps_every_answer(tiny_llama):
    # transformers' steps (fused ones read no blocks: they start each row at its first column)
    backend = load_backend(str(tiny_llama), dtype="float32", batch_size=ROWS + 8, fuse_steps=False)
    onepass = _attention._onepass() is not None  # numba imports: float32 steps in one pass
    label = kernel("_onepass", "LABEL")  # the one-pass kernel names its chunks (and vector code, where it has it)
    assert backend.info["attention"] == (f"sdpa, decode steps in {label}" if onepass else
                                         "sdpa, row blocks, decode steps as matmuls")
    prompts = ["hi", "what is a dog?", "tell me about humans and AI please, at some length"]
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=prompts[i % 3]),),
                                  decoding=Decoding(max_tokens=24, seed=i)) for i in range(3 * (ROWS + 8))]
    early_eos(backend, 1.0)  # rows that finish early wait for a refill reading one column: blocks skip the rest
    calls = []
    original = backend._forward
    backend._forward = lambda cache, **inputs: calls.append(bool(inputs.get("row_blocks"))) or original(cache, **inputs)
    blocked = {r.key: r.text for r in backend.generate(requests)}
    assert any(calls)  # some decode steps skipped columns in blocks
    backend.blocked_attention, calls[:] = False, []
    plain = {r.key: r.text for r in backend.generate(requests)}
    assert not any(calls)
    assert blocked == plain


def test_the_batch_calibration_times_the_kernel_the_decode_loop_runs(tiny_llama, tmp_path, monkeypatch):
    """Calibration steps read every column, a mask transformers drops: they must still time the loop's kernel (here
    in transformers' steps; fused steps call the one-pass kernel themselves, tests/test_step.py)."""
    monkeypatch.setenv("EMPROBE_CACHE", str(tmp_path))
    kernel = "onepass" if _attention._onepass() is not None else "matmul_step"
    used = _kernels_seen(monkeypatch, kernel)
    plain = []
    monkeypatch.setattr(_attention, "sdpa_attention_forward",
                        lambda *a, **k: plain.append(a[1].shape[2]) or sdpa_attention_forward(*a, **k))
    load_backend(str(tiny_llama), dtype="float32", fuse_steps=False)  # batch size auto: measured now
    assert used and set(used) == {kernel}
    assert 1 not in plain  # no one-token step went to transformers' SDPA
