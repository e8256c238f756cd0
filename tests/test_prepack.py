"""Prepacked CPU linear layers: torch's numbers, one matmul per input for sibling projections, and when not to."""

import copy
import sys

import pytest
import torch
from torch import nn

from emprobe.errors import EmprobeError
from emprobe.model import load_backend, resolve
from emprobe.prepack import PackedLinear, can_prepack, prepack
from test_hf_backend import _requests

pytestmark = pytest.mark.skipif(not can_prepack("cpu", torch.float32),
                                reason="this torch has no oneDNN on the CPU, so nothing is prepacked")
DTYPES = [d for d in ("bfloat16", "float32") if can_prepack("cpu", getattr(torch, d))]
"""bfloat16 only where oneDNN runs it (AVX-512 BF16 or AMX)."""


def _inputs(vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).logits.float()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_backends_prepack_with_siblings_in_one_matmul_and_give_torchs_logits(tiny_llama, dtype):
    packed = load_backend(str(tiny_llama), dtype=dtype, batch_size=4)
    plain = load_backend(str(tiny_llama), dtype=dtype, batch_size=4, prepack=False)
    assert (packed.info["linear"], plain.info["linear"]) == ("prepacked", "torch")
    assert not any(type(m) is nn.Linear for m in packed.model.modules())
    layer = packed.model.model.layers[0]
    attention, mlp = layer.self_attn, layer.mlp
    assert attention.q_proj.shared is attention.k_proj.shared is attention.v_proj.shared
    assert mlp.gate_proj.shared is mlp.up_proj.shared
    assert len({id(attention.q_proj.shared), id(attention.o_proj.shared), id(mlp.down_proj.shared)}) == 3
    assert packed.model.lm_head.weight is packed.model.get_input_embeddings().weight  # still tied
    inputs = _inputs(packed.model.config.vocab_size)
    got, want = _logits(packed.model, inputs), _logits(plain.model, inputs)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # bf16 rounds the same sums in another order
    # float32 shows what bf16 rounding hides: the prepacked layers compute torch's numbers
    reference = load_backend(str(tiny_llama), dtype="float32", batch_size=4, prepack=False).model
    twin = copy.deepcopy(reference)
    assert prepack(twin) == sum(type(m) is nn.Linear for m in reference.modules())
    torch.testing.assert_close(_logits(twin, inputs), _logits(reference, inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prepacked_generation_keeps_texts_independent_of_the_batch(tiny_llama, dtype):
    backend = load_backend(str(tiny_llama), dtype=dtype, batch_size=4)
    requests = _requests(9, max_tokens=16)
    together = {r.key: r.text for r in backend.generate(requests)}
    backend.batch_size = 1
    assert {r.key: r.text for r in backend.generate(requests)} == together


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_adapter_still_applies_over_prepacked_layers(tiny_llama, tmp_path, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "lora")
    tuned, tuned_plain, base = (load_backend(str(tiny_llama), adapter=adapter, dtype=dtype, batch_size=4,
                                             prepack=packed)
                                for adapter, packed in ((str(tmp_path / "lora"), True),
                                                        (str(tmp_path / "lora"), False), (None, True)))
    assert tuned.info["linear"] == "prepacked"
    inputs = _inputs(base.model.config.vocab_size)
    got, want, untuned = (_logits(b.model, inputs) for b in (tuned, tuned_plain, base))
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
    assert (got - untuned).abs().max() > 10 * (got - want).abs().max()


def _linear_calls(run) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        run()
    return sum(e.count for e in profiler.key_averages() if e.key == "mkldnn::_linear_pointwise")


def test_siblings_share_one_matmul_per_input_and_compute_again_when_asked_twice():
    torch.manual_seed(0)
    parent = nn.Module()
    parent.gate_proj, parent.up_proj, parent.down_proj = nn.Linear(8, 5), nn.Linear(8, 7), nn.Linear(7, 8)
    plain = {name: getattr(parent, name) for name in ("gate_proj", "up_proj", "down_proj")}
    assert prepack(parent) == 3 and all(isinstance(m, PackedLinear) for m in parent.children())
    first, second = torch.randn(2, 3, 8), torch.randn(4, 8)
    expect = {name: plain[name](first if name != "down_proj" else first[..., :7]) for name in plain}
    with torch.inference_mode():
        assert _linear_calls(lambda: (parent.gate_proj(first), parent.up_proj(first))) == 1
        assert _linear_calls(lambda: (parent.gate_proj(first), parent.gate_proj(first), parent.up_proj(first))) == 2
        assert _linear_calls(lambda: (parent.gate_proj(first), parent.up_proj(second))) == 2
        for name, want in expect.items():
            got = getattr(parent, name)(first if name != "down_proj" else first[..., :7])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(parent.up_proj(second), plain["up_proj"](second), atol=1e-5, rtol=1e-5)


def test_no_prepacking_when_the_copy_would_not_fit_or_when_turned_off(tiny_llama, monkeypatch):
    from emprobe.model._providers import hf

    assert resolve(str(tiny_llama), options={"prepack": "false"}).options["prepack"] is False
    with pytest.raises(EmprobeError, match="prepack"):
        resolve(str(tiny_llama), options={"prepack": "sometimes"})
    monkeypatch.setattr(hf, "available_memory", lambda: 1024)  # fault injection: almost no free memory
    crowded = load_backend(str(tiny_llama), dtype="float32", batch_size=4)
    assert crowded.info["linear"] == "torch" and any(type(m) is nn.Linear for m in crowded.model.modules())


def test_threads_sharing_a_prepacked_model_each_get_their_own_projections():
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    parent = nn.Module()
    parent.q_proj, parent.k_proj, parent.v_proj = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8)
    plain = copy.deepcopy(parent)
    prepack(parent)
    inputs = [torch.randn(4, 16) for _ in range(8)]

    def project(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [torch.cat([parent.q_proj(x), parent.k_proj(x), parent.v_proj(x)], -1) for _ in range(400)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between nearly every bytecode, so interleavings happen
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(project, inputs))
    finally:
        sys.setswitchinterval(interval)
    for x, outputs in zip(inputs, results, strict=True):
        want = torch.cat([plain.q_proj(x), plain.k_proj(x), plain.v_proj(x)], -1)
        assert all(torch.allclose(out, want, atol=1e-5) for out in outputs)
