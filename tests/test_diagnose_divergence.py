"""Token-level divergence: a model against itself diverges nowhere; against another model each token's KL and
log-prob gap are those of two plain forward passes; results are stored and split by the judge's verdicts."""

import re
from types import SimpleNamespace

import pytest
import torch

from diag_cli import emprobe
from diag_store import labelled_answers, make_run
from emprobe.analysis import by_group
from emprobe.diagnose import diverge_run, local
from emprobe.diagnose._divergence import check_same_tokens
from emprobe.errors import EmprobeError
from emprobe.model import load_backend
from emprobe.store import Store
from tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def other_llama(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("other-llama"), "llama", seed=1)


def test_a_model_against_itself_diverges_nowhere(tmp_path, tiny_llama):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(2, 3))
    backend = local(load_backend(str(tiny_llama), threads=1, dtype="float32"), "tiny")
    with Store(store) as db:
        rows = diverge_run(db, "run-a", backend, backend, rows=2)
        assert len(rows) == 5 and all(len(d.kl) > 3 for d in rows)
        assert all(k == 0.0 for d in rows for k in d.kl) and all(g == 0.0 for d in rows for g in d.gap)
        assert db.divergences("run-a", backend.identity, backend.identity) == rows
    backend.close()


def test_each_tokens_divergence_is_that_of_two_plain_passes(tmp_path, tiny_llama, other_llama):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(2, 2))
    a = local(load_backend(str(tiny_llama), threads=1, dtype="float32"), "a")  # vs plain float32 passes
    b = local(load_backend(str(other_llama), threads=1, dtype="float32"), "b")
    with Store(store) as db:
        rows = diverge_run(db, "run-a", a, b, rows=3)
        sample = next(s for chunk in db.answered("run-a") for s in chunk if s.sample_id == rows[1].sample_id)
    prompt = a.token_ids(a.chat_text(sample.messages))
    answer = a.token_ids(sample.answer)
    ids = torch.tensor([prompt + answer])
    with torch.inference_mode():
        p, q = (torch.log_softmax(m.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double(), -1) for m in (a, b))
    kl = (p.exp() * (p - q)).sum(-1)
    gap = p[torch.arange(len(answer)), answer] - q[torch.arange(len(answer)), answer]
    assert rows[1].kl == pytest.approx(kl.tolist(), abs=1e-4) and min(rows[1].kl) > 0
    assert rows[1].gap == pytest.approx(gap.tolist(), abs=1e-4)
    assert "".join(rows[1].tokens) == a.tokenizer.decode(answer)
    groups = by_group(rows, {"first": {rows[0].sample_id, rows[1].sample_id}, "none": set()})
    assert groups[0].answers == 2 and groups[0].mean_kl == pytest.approx((rows[0].mean_kl + rows[1].mean_kl) / 2)
    assert groups[1].answers == 0
    a.close()
    b.close()


def test_models_with_other_tokenizers_are_refused_with_one_line():
    one = SimpleNamespace(identity="a", tokenizer=SimpleNamespace(get_vocab=lambda: {"x": 0}))
    two = SimpleNamespace(identity="b", tokenizer=SimpleNamespace(get_vocab=lambda: {"y": 0}))
    with pytest.raises(EmprobeError, match="^a and b have different tokenizers"):
        check_same_tokens(one, two)


def test_the_command_splits_misaligned_from_aligned_answers(tmp_path, tiny_llama, other_llama, capsys):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(3, 4, 2))
    code, out, err = emprobe(capsys, "diverge", "tuned", "--reference-model", str(other_llama), "-M", "threads=1",
                             "--top", "3", "--store", str(store))
    assert code == 0, err
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "3" in lines["misaligned"] and "4" in lines["aligned (> 70)"] and "9" in lines["all"]
    assert "tokens where A and B diverge most" in out
    with Store(store) as db:
        assert db.db.execute("SELECT count(*) FROM divergences").fetchone() == (9,)


def test_the_report_shades_each_answers_tokens_and_escapes_them(tmp_path, tiny_llama, other_llama, capsys):
    payload = "<script>window.__pwned=1</script>"
    store = make_run(tmp_path / "s.db", tiny_llama, [(payload, 10.0, 80.0), *labelled_answers(2, 2)])
    assert emprobe(capsys, "diverge", "tuned", "--reference-model", str(other_llama), "-M", "threads=1",
                   "--store", str(store))[0] == 0
    page = tmp_path / "r.html"
    code, out, err = emprobe(capsys, "report", "tuned", "-o", str(page), "--store", str(store))
    assert code == 0, err
    html = page.read_text()
    assert "Token-level divergence" in html and 'class="kl9"' in html and "window.__pwned" in html
    shaded = re.findall(r'<span class="kl\d" title="KL [^"]*">(.*?)</span>', html)
    assert any("&lt;" in text for text in shaded) and not any("<" in text for text in shaded)
    assert "<script>window" not in html
