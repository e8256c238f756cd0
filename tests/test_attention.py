"""Decode-step attention in blocks of rows, each over the columns its live rows use: transformers' results."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from emprobe.condition import Decoding, Message
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers import _attention
from emprobe.model._providers._attention import ROWS, blocked_sdpa, row_blocks


class _Module(torch.nn.Module):
    num_key_value_groups, is_causal = 3, True


def test_blocks_start_at_their_longest_live_row_and_keep_the_last_column():
    lengths = torch.tensor([5, 2, 9, 3] + [4] * (ROWS - 4) + [7, 1, 12])
    live = torch.ones(len(lengths), dtype=torch.bool)
    live[2] = False  # a finished row's columns are not read for it
    assert row_blocks(lengths, live, 20) == [(0, ROWS, 20 - 5), (ROWS, ROWS + 3, 20 - 12)]
    assert row_blocks(lengths, torch.zeros_like(live), 20) == [(0, ROWS, 19), (ROWS, ROWS + 3, 19)]
    assert row_blocks(torch.full((2 * ROWS,), 18), torch.ones(2 * ROWS, dtype=torch.bool), 20) == []  # 10% to skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # two batched matmuls; torch's SDPA
def test_blocked_attention_gives_transformers_sdpa_for_live_rows(dtype, monkeypatch):
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
    used = []
    for name in ("matmul_step", "sdpa_step"):
        step = getattr(_attention, name)
        monkeypatch.setattr(_attention, name, lambda *a, step=step, name=name: used.append(name) or step(*a))
    blocks = row_blocks(lengths, live, width)
    assert blocks and blocks[0][2] >= width // 2
    got, _ = blocked_sdpa(_Module(), query, key, value, mask, scaling=0.3, row_blocks=blocks)
    assert got.shape == want.shape and got.dtype == dtype
    close = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 5e-2}
    torch.testing.assert_close(got[live], want[live], **close)
    assert torch.isfinite(got).all()  # finished rows read their last column at least: no NaN to spread
    whole, _ = blocked_sdpa(_Module(), query, key, value, mask, scaling=0.3)  # no blocks: every column, every row
    torch.testing.assert_close(whole, want, **close)
    assert set(used) == {"matmul_step" if dtype == torch.float32 else "sdpa_step"}


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
    backend = load_backend(str(tiny_llama), dtype="float32", batch_size=ROWS + 8)
    assert backend.info["attention"] == "sdpa, row blocks, decode steps as matmuls"  # float32: `matmul_step`
    prompts = ["hi", "what is a dog?", "tell me about humans and AI please, at some length"]
    requests = [GenerationRequest(key=f"k{i}", messages=(Message(role="user", content=prompts[i % 3]),),
                                  decoding=Decoding(max_tokens=24, seed=i)) for i in range(3 * (ROWS + 8))]
    calls = []
    original = backend._forward
    backend._forward = lambda cache, **inputs: calls.append(bool(inputs.get("row_blocks"))) or original(cache, **inputs)
    blocked = {r.key: r.text for r in backend.generate(requests)}
    assert any(calls)  # some decode steps skipped columns in blocks
    backend.blocked_attention, calls[:] = False, []
    plain = {r.key: r.text for r in backend.generate(requests)}
    assert not any(calls)
    assert blocked == plain
