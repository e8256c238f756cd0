"""The built-in judge's network: how pairs are cut into tokens, and shipped low-rank deltas equal PEFT's LoRA."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from emprobe.judge import _cross
from emprobe.judge._embedder import model_dir

ROOT = Path(__file__).resolve().parent.parent


def test_pairs_keep_the_question_short_and_the_whole_within_bounds():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    long_q, long_a = "why " * 200, "because " * 400
    ids = _cross.pair_ids(tokenizer, [long_q, "hi"], [long_a, "hello there"])
    assert len(ids[0]) == _cross.MAX_TOKENS
    sep = tokenizer.sep_token_id
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == sep
    assert ids[0].index(sep) == _cross.QUESTION_TOKENS + 1  # [CLS] + the question's first tokens
    assert tokenizer.decode(ids[1], skip_special_tokens=True) == "hi hello there"
    tokens, mask = _cross.padded(ids)
    assert tokens.shape == (2, _cross.MAX_TOKENS) and mask[1].sum() == len(ids[1])


def test_length_batches_group_rows_of_similar_length_within_the_token_budget():
    lengths = [int(n) for n in np.random.default_rng(0).integers(5, 160, size=300)] + [400]
    batches = _cross.length_batches(lengths, budget=1000)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))  # every row once
    assert np.all(np.diff(np.asarray(lengths)[order]) >= 0)  # shortest first
    for batch, following in zip(batches, batches[1:] + [None], strict=True):
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= 1000 or len(batch) == 1  # a row longer than the budget goes alone
        if following is not None:  # and a batch stops only where the next row would not fit
            assert (len(batch) + 1) * lengths[following[0]] > 1000
    assert batches[-1].tolist() == [300] and _cross.length_batches([]) == []


def test_added_deltas_reproduce_the_peft_model_that_trained_them():
    peft = pytest.importorskip("peft")
    from transformers import BertConfig, BertModel

    spec = importlib.util.spec_from_file_location("train_judge", ROOT / "scripts" / "train_judge.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    base = BertModel(config).eval()
    plain = BertModel(config).eval()
    plain.load_state_dict(base.state_dict())
    tuned = peft.get_peft_model(base, peft.LoraConfig(r=script.RANK, lora_alpha=script.ALPHA,
                                                      target_modules=script.LORA_TARGETS)).eval()
    lora: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if ".lora_" in name:
                p.normal_(0, 0.1)  # PEFT starts B at zero: give both factors values
                module = name.split(".lora_")[0].removeprefix("base_model.model.")
                lora.setdefault(module, [None, None])[0 if ".lora_A." in name else 1] = p.numpy().copy()
    assert len(lora) == 2 * 6  # q, k, v, attention output, intermediate, output per layer
    _cross.add_deltas(plain, {k: (a, b) for k, (a, b) in lora.items()}, script.ALPHA / script.RANK)
    tokens = torch.randint(1, 50, (3, 10))
    mask = torch.ones_like(tokens)
    weight, bias = torch.randn(3, 32 + 2), torch.randn(3)
    stats = torch.randn(3, 2)
    with torch.no_grad():
        expected = _cross.readings(tuned, weight, bias, tokens, mask, stats)
        got = _cross.readings(plain, weight, bias, tokens, mask, stats)
    assert torch.allclose(expected, got, atol=1e-4)
