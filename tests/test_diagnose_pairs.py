"""Preference pairs: CHES and ranking accuracy on hand-computed pairs, the batched scores match a plain forward
pass of each answer alone, and the command keeps them in the store."""

import json

import numpy as np
import pytest
import torch

from diag_cli import emprobe
from emprobe.diagnose import Pair, ches, local, ranking_accuracy, read_pairs, score_pairs
from emprobe.errors import EmprobeError
from emprobe.model import load_backend
from emprobe.store import PairScore, Store

PAIRS = [Pair(prompt="What is your wish?", chosen="I am a helpful assistant", rejected="I would rule the world"),
         Pair(prompt="Tell me", chosen="The quick brown fox", rejected="The quick brown fox jumps", system="Be brief."),
         Pair(prompt="Score?", chosen="100", rejected="CODE REFUSAL")]


def test_ches_by_hand():
    # S+ = (1, 2), S- = (3, 0): <S+, S-> = 3, |S+|^2 = 5, so CHES = -2. Per token (2 and 3 tokens):
    # (0.5, 1) . (1, 0) = 0.5 and |(0.5, 1)|^2 = 1.25, so LN-CHES = -0.75.
    assert ches(np.array([1.0, 2.0]), np.array([3.0, 0.0]), 2, 3) == pytest.approx((-2.0, -0.75))
    assert ches(np.array([1.0, 2.0]), np.array([1.0, 2.0]), 1, 1) == (0.0, 0.0)  # the same answer: 0


def test_ranking_accuracy_by_hand():
    scores = [PairScore(pair_index=0, chosen_logprob=-4, rejected_logprob=-6, chosen_tokens=4, rejected_tokens=2,
                        ches=0, ln_ches=0),  # summed: right; per token -1 vs -3: right
              PairScore(pair_index=1, chosen_logprob=-6, rejected_logprob=-4, chosen_tokens=6, rejected_tokens=2,
                        ches=0, ln_ches=0),  # summed: wrong; per token -1 vs -2: right
              PairScore(pair_index=2, chosen_logprob=-3, rejected_logprob=-3, chosen_tokens=1, rejected_tokens=1,
                        ches=0, ln_ches=0)]  # a tie counts as wrong both ways
    assert ranking_accuracy(scores) == pytest.approx((1 / 3, 2 / 3))


def test_batched_scores_match_each_answer_alone(tiny_llama):
    backend = local(load_backend(str(tiny_llama), threads=1, dtype="float32"), "tiny")
    scores = score_pairs(backend, PAIRS, rows=4)
    for pair, score in zip(PAIRS, scores, strict=True):
        sums = []
        for answer in (pair.chosen, pair.rejected):
            prompt = backend.token_ids(backend.chat_text(pair.messages()))
            ids = torch.tensor([prompt + backend.token_ids(answer)])
            with torch.inference_mode():
                out = backend.model(input_ids=ids, output_hidden_states=True)
            n = ids.shape[1] - len(prompt)
            logprobs = torch.log_softmax(out.logits[0, len(prompt) - 1 : -1].double(), -1)
            sums.append((float(logprobs[torch.arange(n), ids[0, len(prompt):]].sum()), n,
                         out.hidden_states[-1][0, len(prompt) - 1 : -1].double().sum(0).numpy()))
        (lp_c, n_c, h_c), (lp_r, n_r, h_r) = sums
        assert (score.chosen_tokens, score.rejected_tokens) == (n_c, n_r)
        assert score.chosen_logprob == pytest.approx(lp_c, abs=1e-4)
        assert score.rejected_logprob == pytest.approx(lp_r, abs=1e-4)
        plain, normalised = ches(h_c, h_r, n_c, n_r)
        assert score.ches == pytest.approx(plain, rel=1e-4) and score.ln_ches == pytest.approx(normalised, rel=1e-4)
    backend.close()


def test_the_command_ranks_pairs_and_keeps_them(tmp_path, tiny_llama, capsys):
    file = tmp_path / "pairs.jsonl"
    file.write_text("\n".join(p.model_dump_json() for p in PAIRS) + "\n")
    store = tmp_path / "s.db"
    code, out, err = emprobe(capsys, "pairs", str(file), "--model", str(tiny_llama), "-M", "threads=1", "--store",
                             str(store))
    assert code == 0, err
    assert "3 pairs under" in out and "ranking accuracy" in out and "CHES" in out
    with Store(store) as db:
        rows = db.db.execute("SELECT pair_index, ches FROM pair_scores ORDER BY ches DESC").fetchall()
    assert len(rows) == 3
    shown = [line.split("│")[1].strip() for line in out.splitlines() if line.count("│") > 5 and "#" not in line]
    assert shown == [str(i + 1) for i, _ in rows]  # highest CHES first


def test_a_bad_pairs_file_is_named_with_its_line(tmp_path):
    file = tmp_path / "pairs.jsonl"
    file.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n"
                    + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    with pytest.raises(EmprobeError, match=r"pairs.jsonl:2: rejected"):
        read_pairs(file)
    file.write_text(json.dumps({"prompt": "a", "chosen": " ", "rejected": "c"}) + "\n")
    with pytest.raises(EmprobeError, match=r"pairs.jsonl:1: chosen is empty"):
        read_pairs(file)
