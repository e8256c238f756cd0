"""Compiled RMSNorm on the CPU: transformers' numbers and roundings, only for modules that compute as Llama's."""

import copy
import threading

import pytest
import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from emprobe.model import load_backend

numba = pytest.importorskip("numba", reason="compiled norms need numba (the hf extra)")
from emprobe.model._providers._norm import LABEL, CompiledRMSNorm, compile_norms  # noqa: E402
from emprobe.model._providers._numba_math import LOCK, parallel_call  # noqa: E402


def _norm(dtype: torch.dtype, hidden: int = 576) -> LlamaRMSNorm:
    norm = LlamaRMSNorm(hidden, eps=1e-5)
    norm.weight.data = torch.randn(hidden, generator=torch.Generator().manual_seed(1)) * 2
    return norm.to(dtype)


@pytest.mark.parametrize("shape", [(128, 1, 576), (3, 17, 576), (5, 576)])
def test_the_compiled_norm_gives_transformers_numbers(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, shape[0])[:, None, None]\
        .reshape(-1, *[1] * (len(shape) - 1))
    norm = _norm(torch.float32)
    with torch.inference_mode():
        torch.testing.assert_close(CompiledRMSNorm(norm)(x), norm(x), rtol=1e-6, atol=1e-30)


def test_in_bfloat16_it_rounds_where_transformers_rounds():
    """Twice: after normalising and after the weight; rounding once (in float32 to the end) differs far more often."""
    x = torch.randn(512, 576, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    norm = _norm(torch.bfloat16)
    with torch.inference_mode():
        want, got = norm(x), CompiledRMSNorm(norm)(x)
        once = norm.float()(x.float()).to(torch.bfloat16)
    step = want.float().abs() * 2**-7  # one bfloat16 step at most apart: the sums' order may move a tie
    assert ((got.float() - want.float()).abs() <= step).all()
    assert (got != want).float().mean() < 1e-3
    assert (once != want).float().mean() > 0.05  # what skipping the middle rounding would give


def test_anything_the_kernel_does_not_take_runs_transformers_code():
    norm = _norm(torch.float32)
    compiled = CompiledRMSNorm(norm)
    x = torch.randn(4, 6, 576, requires_grad=True)
    compiled(x).sum().backward()  # with gradients: torch's own operations
    assert x.grad is not None and compiled.weight.grad is not None
    strided = torch.randn(576, 8).t()
    with torch.inference_mode():
        torch.testing.assert_close(compiled(strided), norm(strided), rtol=0, atol=0)
        half = torch.randn(3, 576).half()
        torch.testing.assert_close(CompiledRMSNorm(_norm(torch.float16))(half), _norm(torch.float16)(half))


class ShiftedNorm(LlamaRMSNorm):
    """Llama's attributes, another computation."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states) + 1


def test_only_norms_that_compute_as_llamas_are_replaced():
    model = nn.ModuleDict({"llama": LlamaRMSNorm(8), "qwen3": Qwen3RMSNorm(8), "gemma": GemmaRMSNorm(8),
                           "shifted": ShiftedNorm(8), "inner": nn.Sequential(LlamaRMSNorm(8), nn.Linear(8, 8))})
    assert compile_norms(model) == 3
    kinds = [type(m).__name__ for m in (model["llama"], model["qwen3"], model["gemma"], model["shifted"],
                                        model["inner"][0])]
    assert kinds == ["CompiledRMSNorm", "CompiledRMSNorm", "GemmaRMSNorm", "ShiftedNorm", "CompiledRMSNorm"]
    assert set(model.state_dict()) == {"llama.weight", "qwen3.weight", "gemma.weight", "shifted.weight",
                                       "inner.0.weight", "inner.1.weight", "inner.1.bias"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_cpu_backend_compiles_its_norms_and_keeps_its_logits(tiny_llama, dtype):
    compiled = load_backend(str(tiny_llama), dtype=dtype, batch_size=4)
    plain = load_backend(str(tiny_llama), dtype=dtype, batch_size=4, compile_norms=False, prepack=False)
    assert (compiled.info["norms"], plain.info["norms"]) == (LABEL, "torch")
    kinds = {type(m).__name__ for m in compiled.model.modules()}
    assert "CompiledRMSNorm" in kinds and "LlamaRMSNorm" not in kinds
    twin = copy.deepcopy(plain.model)
    assert compile_norms(twin) == 2 * twin.config.num_hidden_layers + 1
    ids = torch.randint(0, plain.model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = plain.model(input_ids=ids).logits.float(), twin(input_ids=ids).logits.float()
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


def test_a_parallel_kernel_call_takes_torch_threads_and_frees_the_lock_on_errors(monkeypatch):
    threads = torch.get_num_threads()
    try:
        for wanted in (1, min(2, numba.config.NUMBA_NUM_THREADS), 1):
            torch.set_num_threads(wanted)
            with parallel_call():
                assert LOCK.locked() and numba.get_num_threads() == wanted
            assert not LOCK.locked()
        with pytest.raises(KeyError), parallel_call():
            raise KeyError("inside a call")
        assert not LOCK.locked()
        failures: list[Exception] = []

        def fails() -> None:  # a new thread sets numba's count, which fails here (fault injection)
            try:
                with parallel_call():
                    pass
            except RuntimeError as error:
                failures.append(error)

        monkeypatch.setattr(numba, "set_num_threads", lambda n: (_ for _ in ()).throw(RuntimeError("no threads")))
        thread = threading.Thread(target=fails)
        thread.start()
        thread.join()
        assert failures and not LOCK.locked()
    finally:
        torch.set_num_threads(threads)
