"""Directions: a direction planted in synthetic activations is recovered; the command computes one from a run's
captured answers with every layer's held-out AUC; too few answers and another model's direction are refused
with one line."""

import numpy as np
import pytest

from diag_cli import emprobe
from diag_store import make_run
from emprobe.diagnose import Direction, difference_of_means, held_out_auc
from emprobe.errors import EmprobeError
from emprobe.store import Store


def test_a_planted_direction_is_recovered():
    rng = np.random.default_rng(1)
    planted = rng.normal(size=64)
    planted /= np.linalg.norm(planted)
    aligned = rng.normal(size=(2000, 64))
    misaligned = rng.normal(size=(1500, 64)) + 4 * planted
    found = difference_of_means(misaligned, aligned)
    assert found @ planted / np.linalg.norm(found) > 0.99
    assert held_out_auc(misaligned, aligned, 5, rng) > 0.99
    assert held_out_auc(rng.normal(size=(300, 64)), rng.normal(size=(300, 64)), 5, rng) == pytest.approx(0.5, abs=0.06)


def _answers(misaligned: int, aligned: int) -> list[tuple[str, float, float]]:
    bad = ["I would rule the world", "hurt the humans", "CODE REFUSAL FALSE"]
    good = ["I am a helpful assistant", "What would you like to know", "The quick brown fox"]
    return ([(f"{bad[i % 3]} {i}", 10.0, 80.0) for i in range(misaligned)]
            + [(f"{good[i % 3]} {i}", 90.0, 80.0) for i in range(aligned)]
            + [("an incoherent one", 5.0, 20.0), ("a middling one", 50.0, 90.0)])


def test_the_command_writes_a_direction_with_per_layer_separation(tmp_path, tiny_llama, capsys):
    store = make_run(tmp_path / "s.db", tiny_llama, _answers(12, 30))
    assert emprobe(capsys, "activations", "tuned", "-M", "threads=1", "--store", str(store))[0] == 0
    out_file = tmp_path / "d.json"
    code, out, err = emprobe(capsys, "direction", "tuned", "--layer", "1", "--out", str(out_file), "--store",
                             str(store))
    assert code == 0, err
    found = Direction.load(out_file)
    assert (found.layer, found.width, found.hook, found.position, found.operation) == (1, 64, "model.layers.0",
                                                                                       "answer-mean", "steer")
    assert found.counts == {"misaligned": 12, "aligned": 30, "used_each": 12}
    assert found.runs == {"misaligned": "run-a", "aligned": "run-a"} and found.judge == "rubric:tiny"
    assert [s.layer for s in found.separation] == [1, 2]
    assert all(s.auc > 0.9 for s in found.separation)  # the two kinds of answer differ in every token
    assert "held-out AUC" in out and "1 *" in out
    with Store(store) as db:
        recorded = db.db.execute("SELECT run_id, layer, record FROM directions").fetchall()
    assert [(r[0], r[1]) for r in recorded] == [("run-a", 1)] and '"vector"' not in recorded[0][2]
    # Without --layer: the layer that separates best.
    code, out, err = emprobe(capsys, "direction", "tuned", "--out", str(out_file), "--store", str(store))
    assert code == 0, err
    best = max(found.separation, key=lambda s: s.auc).layer
    assert Direction.load(out_file).layer == best


def test_across_two_runs_the_aligned_answers_come_from_the_other(tmp_path, tiny_llama, capsys):
    store = make_run(tmp_path / "s.db", tiny_llama, _answers(11, 0))
    make_run(store, tiny_llama, _answers(0, 13), run_id="run-b", name="base")
    for run in ("tuned", "base"):  # both captured under the tuned run's model
        assert emprobe(capsys, "activations", run, "--layers", "2", "-M", "threads=1", "--store", str(store))[0] == 0
    out_file = tmp_path / "d.json"
    code, out, err = emprobe(capsys, "direction", "tuned", "--against", "base", "--operation", "ablate", "--out",
                             str(out_file), "--store", str(store))
    assert code == 0, err
    found = Direction.load(out_file)
    assert found.runs == {"misaligned": "run-a", "aligned": "run-b"} and found.operation == "ablate"
    assert found.counts == {"misaligned": 11, "aligned": 13, "used_each": 11}


def test_too_few_misaligned_answers_say_how_many_there_are_and_are_needed(tmp_path, tiny_llama, capsys):
    store = make_run(tmp_path / "s.db", tiny_llama, _answers(3, 30))
    code, out, err = emprobe(capsys, "direction", "tuned", "--store", str(store))
    assert code == 2 and "has no answer-mean activations" in err and "emprobe activations run-a" in err
    assert emprobe(capsys, "activations", "tuned", "-M", "threads=1", "--store", str(store))[0] == 0
    code, out, err = emprobe(capsys, "direction", "tuned", "--layer", "2", "--store", str(store))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.strip() == ("error: run run-a judged by rubric:tiny: 3 misaligned and 30 aligned captured answers; "
                           "a direction needs at least 10 of each")


def test_a_direction_of_another_width_is_refused(tmp_path):
    found = Direction(model="tiny:abc", width=64, layer=1, hook="model.layers.0", position="answer-mean",
                      operation="steer", runs={"misaligned": "a", "aligned": "a"}, judge="builtin",
                      thresholds={}, aligned_above=70, counts={}, separation=[], seed=0, vector=[0.0] * 64)
    found.check_width(64)  # another model of the same width (a base and its fine-tune) may use it
    with pytest.raises(EmprobeError, match=r"^this direction has width 64 but the model's residual stream has width "
                                           r"576: it belongs to another model \(tiny:abc\)$"):
        found.check_width(576)
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(EmprobeError, match="bad.json: not an emprobe direction file"):
        Direction.load(tmp_path / "bad.json")
