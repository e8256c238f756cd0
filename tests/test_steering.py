"""Steering and ablation as conditions: YAML expansion and keys, the hooks' arithmetic on a real model, exact-norm
random controls, and a steered run end to end with its controls in the summary and the report."""

import json
import shutil
import sqlite3
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from diag_cli import emprobe
from emprobe.condition import Condition, Direction, Intervention, load_conditions
from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers._intervene import Intervener, decoder_layers
from emprobe.plan import condition_key, plan_samples
from emprobe.suite import Question, Suite

WIDTH = 64  # the tiny test models' residual stream


def direction_file(path, seed: int = 0, norm: float = 3.0, layer: int = 1):
    v = np.random.default_rng(seed).standard_normal(WIDTH)
    found = Direction(model="tiny", width=WIDTH, layer=layer, hook=f"model.layers.{layer - 1}", position="answer-mean",
                      operation="steer", runs={"misaligned": "a", "aligned": "a"}, judge="builtin", thresholds={},
                      aligned_above=70, counts={}, separation=[], seed=0, vector=list(v / np.linalg.norm(v) * norm))
    path.write_text(found.model_dump_json())
    return path


def conditions_file(path, body: str):
    path.write_text(body)
    return path


STEER = """conditions:
  - name: free
  - name: steer
    steer: {direction: d.json, layers: [1, 2], alpha: [0, 8]}
    controls: {random: 2, layer: 2}
  - name: cut
    ablate: {direction: d.json, layers: [1, 2]}
    controls: {random: 1}
"""


def test_yaml_expands_layers_alphas_and_controls(tmp_path):
    direction_file(tmp_path / "d.json")
    found = load_conditions(conditions_file(tmp_path / "c.yaml", STEER))
    names = [c.name for c in found]
    assert names == ["free",
                     "steer.L1.a0", "steer.L1.a0~random0", "steer.L1.a0~random1", "steer.L1.a0~layer2",
                     "steer.L1.a8", "steer.L1.a8~random0", "steer.L1.a8~random1", "steer.L1.a8~layer2",
                     "steer.L2.a0", "steer.L2.a0~random0", "steer.L2.a0~random1", "steer.L2.a0~layer2",
                     "steer.L2.a8", "steer.L2.a8~random0", "steer.L2.a8~random1", "steer.L2.a8~layer2",
                     "cut.L1+2", "cut.L1+2~random0"]
    by_name = {c.name: c.intervention for c in found}
    assert by_name["free"] is None
    moved = by_name["steer.L1.a8~layer2"]
    assert (moved.layers, moved.alpha, moved.control, moved.of) == ((2,), 8.0, "layer", "steer.L1.a8")
    assert by_name["cut.L1+2"].layers == (1, 2) and by_name["cut.L1+2"].operation == "ablate"
    assert by_name["steer.L2.a0"].direction == str((tmp_path / "d.json").resolve())


def test_keys_ignore_where_the_direction_lies_but_not_what_it_holds(tmp_path):
    plain = Condition(name="free")
    assert condition_key(plain) == "a0e9f14394d3125b"  # as before interventions existed: old runs keep their ids
    assert "intervention" not in plain.model_dump()
    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir(), there.mkdir()
    direction_file(here / "d.json")
    shutil.copy(here / "d.json", there / "d.json")
    body = "conditions:\n  - name: s\n    steer: {direction: d.json, layer: 1, alpha: 4}\n"
    a = load_conditions(conditions_file(here / "c.yaml", body))
    b = load_conditions(conditions_file(there / "c.yaml", body))
    suite = Suite(name="x", questions=(Question(id="q", paraphrases=("Hi?",)),))
    keys = [[(s.sample_id, s.gen_key) for s in plan_samples([suite], c, "tiny", 2)] for c in (a, b)]
    assert keys[0] == keys[1]  # a copy elsewhere: same ids and generation keys
    direction_file(there / "d.json", seed=1)
    changed = load_conditions(conditions_file(there / "c.yaml", body))
    assert [(s.sample_id, s.gen_key) for s in plan_samples([suite], changed, "tiny", 2)] != keys[0]
    unsteered = [s.gen_key for s in plan_samples([suite], [Condition(name="s")], "tiny", 2)]
    assert not set(unsteered) & {g for _, g in keys[0]}  # a steered answer is never a cached plain one


@pytest.mark.parametrize("body,message", [
    ("  - name: s\n    steer: {direction: d.json, layer: 1, colour: red}\n",
     r"conditions\[0\]\.steer\.colour: Extra inputs are not permitted"),
    ("  - name: s\n    steer: {direction: nope.json}\n", r"nope\.json: direction file not found"),
    ("  - name: s\n    ablate: {direction: d.json, alpha: 2}\n", r"conditions\[0\]\.ablate\.alpha: ablation"),
    ("  - name: s\n    steer: {direction: d.json}\n    ablate: {direction: d.json}\n", "steer or ablate, not both"),
    ("  - name: s\n    steer: {direction: d.json, layer: 0}\n", r"conditions\[0\]\.steer\.layer: Input should be"),
    ("  - name: s\n    steer: {direction: d.json}\n    controls: {random: -1}\n",
     r"conditions\[0\]\.controls\.random: Input should be"),
    ("  - name: s\n    steer: 3\n", r"conditions\[0\]\.steer: Input should be a valid dictionary"),
])
def test_malformed_interventions_are_one_line_naming_the_field(tmp_path, body, message):
    direction_file(tmp_path / "d.json")
    with pytest.raises(EmprobeError, match=message):
        load_conditions(conditions_file(tmp_path / "c.yaml", "conditions:\n" + body))


def test_random_controls_have_exactly_the_directions_norm(tmp_path):
    direction = Direction.load(direction_file(tmp_path / "d.json", norm=7.5))
    base = dict(operation="steer", direction="d.json", sha256="x", model="tiny", layers=(1,), alpha=1.0)
    v = Intervention(**base).vector(direction)
    controls = [Intervention(**base, control=f"random:{k}").vector(direction) for k in range(5)]
    for u in controls:
        assert np.linalg.norm(u) == pytest.approx(np.linalg.norm(v), rel=1e-12)
        assert abs(u @ v) / np.linalg.norm(v) ** 2 < 0.6  # another direction, not the same one
    assert not np.allclose(controls[0], controls[1])
    assert np.array_equal(controls[0], Intervention(**base, control="random:0").vector(direction))  # seeded


def _hidden_after(backend, layer: int, intervention: Intervention | None) -> torch.Tensor:
    """The output of decoder block `layer` on a fixed prompt, under `intervention`."""
    seen = []
    block = decoder_layers(backend.model)[1][layer - 1]
    ids = torch.tensor([backend.token_ids("The quick brown fox jumps over")], device=backend.device)
    with Intervener(backend.model, intervention) if intervention else nullcontext():
        handle = block.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
        try:
            backend.model(input_ids=ids)
        finally:
            handle.remove()
    return seen[0].double().cpu()


def test_hooks_add_the_direction_or_project_it_out(tiny_llama, tmp_path):
    backend = load_backend(str(tiny_llama), batch_size=4, threads=1, dtype="float32")
    path = direction_file(tmp_path / "d.json", norm=2.0)
    direction = Direction.load(path)
    pinned = dict(direction=str(path), sha256=file_sha256(path), model="tiny")
    v = torch.tensor(direction.vector, dtype=torch.float64)
    plain = _hidden_after(backend, 1, None)
    steered = _hidden_after(backend, 1, Intervention(operation="steer", layers=(1,), alpha=3.0, **pinned))
    assert torch.allclose(steered - plain, 3.0 * v.expand_as(plain), atol=1e-5)
    ablated = _hidden_after(backend, 1, Intervention(operation="ablate", layers=(1,), **pinned))
    unit = v / v.norm()
    assert (ablated @ unit).abs().max() < 1e-5 < (plain @ unit).abs().max()
    assert torch.allclose(ablated, plain - (plain @ unit)[..., None] * unit, atol=1e-5)
    wide = Direction(**{**direction.model_dump(), "width": 576, "vector": [0.0] * 576})
    (tmp_path / "wide.json").write_text(wide.model_dump_json())
    with pytest.raises(EmprobeError, match="has width 576 but the model's residual stream has width 64"):
        Intervener(backend.model, Intervention(operation="ablate", layers=(1,), **{
            **pinned, "direction": str(tmp_path / "wide.json"),
            "sha256": file_sha256(tmp_path / "wide.json")}))
    with pytest.raises(EmprobeError, match="this model has layers 1..2"):
        Intervener(backend.model, Intervention(operation="ablate", layers=(3,), **pinned))
    path.write_text(path.read_text().replace('"seed":0', '"seed":1'))
    with pytest.raises(EmprobeError, match="changed since the run was planned"):
        Intervener(backend.model, Intervention(operation="ablate", layers=(1,), **pinned))


def test_alpha_zero_reproduces_the_unsteered_answers(tiny_llama, tmp_path):
    backend = load_backend(str(tiny_llama), batch_size=4, threads=1)
    path = direction_file(tmp_path / "d.json", norm=50.0)
    pinned = dict(direction=str(path), sha256=file_sha256(path), model="tiny")
    conditions = load_conditions(conditions_file(tmp_path / "c.yaml", "conditions:\n  - name: free\n"))
    suite = Suite(name="x", questions=(Question(id="q", paraphrases=("Hello there", "Tell me a story")),))
    specs = list(plan_samples([suite], conditions, "tiny", 3))

    def texts(intervention):
        decoding = {"max_tokens": 8}
        requests = [GenerationRequest(key=s.gen_key, messages=s.messages,
                                      decoding=s.decoding.model_copy(update=decoding), intervention=intervention)
                    for s in specs]
        return [r.text for r in sorted(backend.generate(requests), key=lambda r: r.key)]

    plain = texts(None)
    assert texts(Intervention(operation="steer", layers=(1,), alpha=0.0, **pinned)) == plain
    assert texts(Intervention(operation="steer", layers=(1,), alpha=0.0, positions="generated", **pinned)) == plain
    assert texts(Intervention(operation="steer", layers=(1,), alpha=4.0, **pinned)) != plain


def test_a_steered_run_reports_each_intervention_beside_its_controls(tiny_llama, tmp_path, capsys):
    direction_file(tmp_path / "d.json", norm=40.0)
    conditions = conditions_file(tmp_path / "c.yaml", """conditions:
  - name: free
    decoding: {max_tokens: 6}
  - name: steer
    steer: {direction: d.json, layer: 1, alpha: [0, 1]}
    controls: {random: 2, layer: 2}
    decoding: {max_tokens: 6}
""")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nquestions:\n  - id: a\n    paraphrases: [Hello there]\n"
                     "  - id: b\n    paraphrases: [Tell me a story]\n")
    store = tmp_path / "e.db"
    run = ["run", "--model", str(tiny_llama), "--suite", str(suite), "--condition", str(conditions), "--samples", "3",
           "--max-tokens", "6", "-M", "threads=1", "--store", str(store), "--name", "steered"]
    code, out, err = emprobe(capsys, *run)
    assert code == 0, err
    assert "steering and ablation against controls" in out and "steer.L1.a1~random1" in out
    with sqlite3.connect(store) as db:
        answers = dict(db.execute("SELECT s.condition || '/' || s.sample_id, g.text FROM samples s "
                                  "JOIN generations g ON g.gen_key = s.gen_key").fetchall())
        generations = db.execute("SELECT count(*) FROM generations").fetchone()[0]
    assert len(answers) == 9 * 6 and generations == 9 * 6  # free + 2 alphas x (itself + 3 controls): own answers
    code, out, err = emprobe(capsys, *run)  # resume: nothing new
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM generations").fetchone()[0] == generations
    from emprobe.analysis import baseline_note, load_run, steering_rows
    from emprobe.store import Store

    with Store(store, read_only=True) as db:
        report = load_run(db, "steered")
    assert [(r.intervention.condition, [k.condition for k in r.controls]) for r in report.steering] == [
        ("steer.L1.a0", ["steer.L1.a0~random0", "steer.L1.a0~random1", "steer.L1.a0~layer2"]),
        ("steer.L1.a1", ["steer.L1.a1~random0", "steer.L1.a1~random1", "steer.L1.a1~layer2"])]
    first = report.steering[0]
    assert first.baseline == "free" and first.intervention.delta.n2 == 6 and first.intervention.row.scored == 6
    # A baseline must ask the same way: with another decoding, `free` is no baseline for the steered conditions.
    other = [{**c, "decoding": {**c["decoding"], "max_tokens": 7}} if c["name"] == "free" else c
             for c in report.run.config["conditions"]]
    by_question = {c: report.counts_by_question(c) for c in report.conditions}
    unmatched = steering_rows(other, {t.condition: t for t in report.totals}, by_question)
    assert [r.baseline for r in unmatched] == [None, None] and unmatched[0].intervention.delta is None
    assert "no unchanged condition asks like steer.L1.a0, steer.L1.a1" in baseline_note(unmatched)
    code, out, err = emprobe(capsys, "report", "steered", "--store", str(store), "-o", str(tmp_path / "r.html"))
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert '<table class="steering">' in html and "steer alpha=1 at layer 2, control layer" in html
    config = json.loads(sqlite3.connect(store).execute("SELECT config FROM runs").fetchone()[0])
    assert [c.get("intervention", {}).get("control") for c in config["conditions"]][:3] == [None, None, "random:0"]


def test_a_remote_model_cannot_be_steered(tmp_path, capsys):
    direction_file(tmp_path / "d.json")
    conditions = conditions_file(tmp_path / "c.yaml", "conditions:\n  - name: s\n    steer: {direction: d.json}\n")
    code, out, err = emprobe(capsys, "run", "--model", "openai-compat:m@http://127.0.0.1:9/v1", "--condition",
                             str(conditions), "--store", str(tmp_path / "e.db"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "condition 's.L1.a1' (steer alpha=1 at layer 1) needs a local model (the hf backend)" in err
    assert not (tmp_path / "e.db").exists()
