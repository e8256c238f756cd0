"""Activation capture: forward hooks keep exactly the residual stream `output_hidden_states` reports, pooled as
asked; a run's answers are streamed into `.npy` files beside the store, recorded with their sha256."""

import json

import numpy as np
import pytest
import torch

from diag_cli import emprobe
from diag_store import labelled_answers, make_run
from emprobe.condition import Message
from emprobe.diagnose import LayerCapture, capture_run, decoder_layers, load_array, local
from emprobe.diagnose._capture import pooling_weights
from emprobe.diagnose._forward import encode, padded
from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256
from emprobe.model import load_backend
from emprobe.store import Store


@pytest.fixture(scope="module")
def backend(tiny_llama):
    loaded = load_backend(str(tiny_llama), threads=1, batch_size=3, dtype="float32")  # vs output_hidden_states
    yield local(loaded, "tiny")
    loaded.close()


def _batch(backend):
    talks = [("hi there", "I am a helpful assistant"), ("what?", "x"), ("Tell me about the fox", "")]
    encoded = [encode(backend, (Message(role="user", content=q),), a) for q, a in talks]
    return encoded, *padded(encoded, backend.pad_id, backend.device)


@pytest.mark.parametrize("position", ["answer-mean", "prompt-mean", "last"])
def test_hooks_keep_what_output_hidden_states_reports(backend, position):
    encoded, ids, mask = _batch(backend)
    with torch.inference_mode():
        hidden = [h.cpu() for h in backend.model(input_ids=ids, attention_mask=mask,
                                                 output_hidden_states=True).hidden_states]
    weights = pooling_weights(encoded, position, ids.shape[1])
    assert torch.allclose(weights.sum(1), torch.ones(3))
    layers = len(decoder_layers(backend.model)[1])
    got = {n: v.cpu() for n, v in LayerCapture(backend.model, range(1, layers + 1)).run(ids, mask, weights).items()}
    for n in range(1, layers):  # layer N: the output of block N, which is hidden_states[N]
        assert torch.allclose(got[n], torch.einsum("btd,bt->bd", hidden[n].float(), weights), atol=1e-5)
    # The last block's output is taken before the final norm that hidden_states[-1] applies.
    if position == "last":
        last = [len(e.ids) - 1 for e in encoded]
        normed = backend.model.model.norm(got[layers].to(backend.device)).cpu()
        assert torch.allclose(normed, hidden[layers][torch.arange(3), last], atol=1e-5)
    assert not torch.allclose(got[layers], torch.einsum("btd,bt->bd", hidden[layers].float(), weights))


def test_answer_mean_pools_only_the_answer_tokens(backend):
    encoded, ids, mask = _batch(backend)
    weights = pooling_weights(encoded, "answer-mean", ids.shape[1])
    first = encoded[0]
    assert weights[0, : first.prompt_len].sum() == 0
    assert weights[0, first.prompt_len : len(first.ids)].tolist() == pytest.approx([1 / first.answer_len] *
                                                                                   first.answer_len)
    assert weights[2].argmax() == len(encoded[2].ids) - 1  # an empty answer falls back to the last token


def test_a_blocks_tuple_output_is_read_too(backend):
    encoded, ids, mask = _batch(backend)
    weights = pooling_weights(encoded, "last", ids.shape[1])
    plain = LayerCapture(backend.model, [1]).run(ids, mask, weights)[1]
    block = decoder_layers(backend.model)[1][0]
    handle = block.register_forward_hook(lambda module, args, output: (output, None))  # as older blocks return
    try:
        wrapped = LayerCapture(backend.model, [1]).run(ids, mask, weights)[1]
    finally:
        handle.remove()
    assert torch.equal(plain, wrapped)


def test_a_run_is_captured_into_arrays_beside_the_store(tmp_path, backend, tiny_llama):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(4, 5, 2))
    with Store(store) as db:
        arrays = capture_run(db, "run-a", backend, [1, 2], "answer-mean")
        assert db.activations("run-a") == arrays
        ids, rows = load_array(store, arrays[1])
        answers = {s.sample_id: s for chunk in db.answered("run-a") for s in chunk}
    assert len(ids) == 11 == rows.shape[0] and rows.shape[1] == 64 and rows.dtype == np.float32
    assert arrays[0].path.startswith("s-arrays/run-a/") and arrays[1].hook == "model.layers.1"
    assert file_sha256(tmp_path / arrays[1].path) == arrays[1].sha256
    assert json.loads((tmp_path / arrays[1].samples_path).read_text()) == ids == sorted(answers)
    sample = answers[ids[5]]  # each row is its own answer's pooled activation, whatever batch it landed in
    e = encode(backend, sample.messages, sample.answer)
    ids_, mask = padded([e], backend.pad_id, backend.device)
    alone = LayerCapture(backend.model, [2]).run(ids_, mask, pooling_weights([e], "answer-mean", ids_.shape[1]))[2]
    assert np.allclose(rows[5], alone[0].cpu().numpy(), atol=1e-5)
    (tmp_path / arrays[1].path).write_bytes(b"changed")
    with pytest.raises(EmprobeError, match="changed since it was captured"):
        load_array(store, arrays[1])


def test_capturing_another_layer_keeps_the_earlier_ones(tmp_path, backend, tiny_llama):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(2, 2))
    with Store(store) as db:
        capture_run(db, "run-a", backend, [1], "last")
        capture_run(db, "run-a", backend, [2], "last")
        kept = db.activations("run-a", backend.identity, "last")
        assert [a.layer for a in kept] == [1, 2]
        for array in kept:
            load_array(store, array)


def test_the_command_captures_and_names_bad_layers(tmp_path, tiny_llama, capsys):
    store = make_run(tmp_path / "s.db", tiny_llama, labelled_answers(3, 3))
    code, out, err = emprobe(capsys, "activations", "tuned", "--layers", "2", "--position", "last", "-M", "threads=1",
                             "--store", str(store))
    assert code == 0, err
    assert "model.layers.1" in out and "6" in out
    with Store(store) as db:
        assert [(a.layer, a.position, a.rows) for a in db.activations("run-a")] == [(2, "last", 6)]
    code, out, err = emprobe(capsys, "activations", "tuned", "--layers", "3", "--store", str(store))
    assert code == 2 and err.strip().splitlines()[-1] == "error: --layers '3': this model has layers 1..2"
    code, out, err = emprobe(capsys, "activations", "tuned", "--position", "first", "--store", str(store))
    assert code == 2 and "--position 'first': choose answer-mean, prompt-mean, last" in err
