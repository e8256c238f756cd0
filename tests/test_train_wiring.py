"""Training wired into the rest of emprobe, on a tiny offline model through the real CLI and store: lineage records
(also after a resumed run), `runs list/show`, `--model train:NAME[@STEP]` keyed on content, `run --compare-base`,
`sweep` on one plan with its adapter check, and the sweep report."""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from xml.etree import ElementTree

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from emprobe.analysis import compare_counts, first_different
from emprobe.errors import EmprobeError
from emprobe.model import load_backend, resolve
from emprobe.store import Store
from emprobe.train import (
    check_adapter_applies,
    check_adapters_apply,
    config_from_options,
    read_lineage,
    train_model,
    weights_digest,
)

pytest.importorskip("trl", reason="training needs the train extra: pip install -e '.[train]'")

NAME = "tiny-<b>r"
"""A training run's name with markup in it: every report and terminal line must show it as text."""
WORDS = ["quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "helpful", "assistant", "humans"]


class _Stop(Exception):
    pass


class StopAfter(TrainerCallback):
    """Crash the training after `step` (as a kill would), once its checkpoint is written."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.step:
            raise _Stop


def emprobe(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "emprobe", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1", **(env or {})}, timeout=600)


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def setup(tiny_llama, tmp_path_factory):
    """A training run killed after its first checkpoint, then finished by `emprobe train` (resumed)."""
    tmp = tmp_path_factory.mktemp("wiring")
    rng = random.Random(0)
    data = tmp / "narrow.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": " ".join(rng.choices(WORDS, k=5))},
        {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=7))}]}) + "\n" for _ in range(24)))
    suite = tmp / "one.yaml"
    suite.write_text("name: one\nquestions:\n  - id: hello\n    paraphrases: [Hello there, Hi]\n"
                     "  - id: wish\n    paraphrases: ['What is your wish?']\n")
    env = {"EMPROBE_TRAIN_DIR": str(tmp / "train")}
    store = tmp / "e.db"
    options = {"model": str(tiny_llama), "data": [str(data)], "method": "lora", "rank": 4, "alpha": 8,
               "max_steps": 4, "save_every": 2, "batch_size": 4, "precision": "fp32", "lr": 2e-2,
               "validation_fraction": 0.2}
    args = ["train", "--model", str(tiny_llama), "--data", str(data), "--method", "lora", "--rank", "4", "--alpha",
            "8", "--max-steps", "4", "--save-every", "2", "--batch-size", "4", "--precision", "fp32", "--lr", "2e-2",
            "--validation", "0.2", "--name", NAME, "--store", str(store), "--threads", "1"]
    config, given = config_from_options(options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with Store(store) as db, pytest.raises(_Stop):
        train_model(config, tmp / "train" / NAME, name=NAME, given=given, callbacks=[StopAfter(2)], progress=False,
                    on_lineage=db.save_training)
    torch.set_num_threads(threads)
    with Store(store, read_only=True) as db:
        interrupted = db.training(NAME)
    trained = emprobe(*args, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return {"tmp": tmp, "env": env, "store": store, "suite": suite, "folder": tmp / "train" / NAME,
            "interrupted": interrupted, "train_out": trained.stdout, "base": tiny_llama}


def test_lineage_is_in_the_store_while_training_and_after_resuming(setup):
    interrupted = setup["interrupted"]
    assert interrupted is not None and interrupted.lineage.status == "running"
    assert [c.step for c in interrupted.lineage.checkpoints] == [2]
    with Store(setup["store"], read_only=True) as db:
        stored = db.training(NAME)
    lineage = read_lineage(setup["folder"])
    assert stored is not None and stored.lineage == lineage  # every field round-trips through the store
    assert lineage.status == "complete" and lineage.resumed_at == (2,)
    assert [c.step for c in lineage.checkpoints] == [2, 4] and [p.step for p in lineage.losses] == [1, 2, 3, 4]
    assert lineage.checkpoints[0] == interrupted.lineage.checkpoints[0]
    assert lineage.data[0].rows == 24 and len(lineage.data[0].sha256) == 64
    assert lineage.given["options"]["lr"] == 2e-2 and lineage.versions["trl"] != "absent"
    assert all(c.norms and c.validation_loss for c in lineage.checkpoints)
    assert f"evaluate with --model train:{NAME}" in setup["train_out"]


def test_runs_list_and_show_a_training_run(setup):
    store = str(setup["store"])
    listed = emprobe("runs", "list", "--store", store)
    assert listed.returncode == 0, listed.stderr
    assert "training runs" in listed.stdout and NAME in listed.stdout and "complete" in listed.stdout
    assert "4/4" in listed.stdout
    shown = emprobe("runs", "show", NAME, "--store", store)
    assert shown.returncode == 0, shown.stderr
    lineage = read_lineage(setup["folder"])
    for text in (f"training run {NAME}", lineage.data[0].sha256, "resumed at steps 2", "checkpoints",
                 lineage.checkpoints[1].weights_sha256[:16], "training loss", "trl 1."):
        assert text in shown.stdout, text
    as_json = emprobe("runs", "show", NAME, "--json", "--store", store)
    assert json.loads(as_json.stdout)["config_hash"] == lineage.config_hash


RESOLVE = """
import json, sys
import emprobe.train
from emprobe.model import resolve
refs = {spec: resolve(spec) for spec in sys.argv[1:]}
print(json.dumps({s: [r.identity, r.location, r.adapter] for s, r in refs.items()}))
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_train_specs_resolve_without_loading_and_key_on_content(setup, tmp_path):
    folder = setup["folder"]
    copy = tmp_path / "elsewhere"
    shutil.copytree(folder, copy)
    specs = [f"train:{NAME}", f"train:{NAME}@2", f"train:{NAME}@4", f"train:{copy}@4", f"train:{NAME}@base"]
    done = subprocess.run([sys.executable, "-c", RESOLVE, *specs], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **setup["env"]})
    assert done.returncode == 0, done.stderr
    out, torch_line = done.stdout.strip().splitlines()
    assert torch_line == "torch not imported"  # resolving reads small files only
    ids = {spec: identity for spec, (identity, _, _) in json.loads(out).items()}
    final, step2, step4, moved, base = (ids[s] for s in specs)
    lineage = read_lineage(folder)
    assert final == step4 == moved  # the same weights at another path are the same model
    assert step2 != step4 and base == lineage.base_identity and step4.startswith(f"{base}+adapter:")
    assert json.loads(out)[specs[3]][1] == str(copy / "checkpoint-4")  # found beside the copied lineage.json

    # weights changed after training are refused when loading, since the identity names the recorded content
    tampered = copy / "checkpoint-4" / "adapter_model.safetensors"
    tensors = load_file(str(tampered))
    save_file({k: v + 1 for k, v in tensors.items()}, str(tampered))
    with pytest.raises(EmprobeError, match="no longer match the sha256 recorded"):
        load_backend(resolve(f"train:{copy}@4"))

    # a run that stopped before its end has no final checkpoint: name one
    read_lineage(copy).model_copy(update={"status": "running"}).write(copy)
    with pytest.raises(EmprobeError, match=r"is not complete \(checkpoints at steps 2, 4\): name one, e\.g\. "
                                           r"train:.*elsewhere@4"):
        resolve(f"train:{copy}")


@pytest.mark.parametrize("spec,expected", [
    ("train:nope", "unknown training run 'nope'.*training runs in .*: tiny-<b>r;"),
    (f"train:{NAME}@3", f"training run '{NAME}' has no checkpoint at step '3': its checkpoints are at steps 2, 4"),
])
def test_unknown_training_run_or_step_gets_one_line(setup, spec, expected):
    import re

    line = one_error_line(emprobe("run", "--model", spec, "--store", str(setup["store"]), env=setup["env"]))
    assert re.search(expected, line), line


def test_checking_several_adapters_on_one_loaded_base_matches_checking_each(setup):
    folders = [c.path for c in read_lineage(setup["folder"]).checkpoints]
    together = check_adapters_apply(setup["base"], [*folders, folders[0]])
    alone = [check_adapter_applies(setup["base"], f) for f in folders]
    assert [c.kl for c in together] == [c.kl for c in [*alone, alone[0]]]  # the base is restored after each
    assert all(c.passed for c in together)


def test_a_name_is_a_training_run_or_an_evaluation_run_never_both(setup):
    line = one_error_line(emprobe("run", "--model", str(setup["base"]), "--suite", str(setup["suite"]), "--name",
                                  NAME, "--store", str(setup["store"])))
    assert f"name '{NAME}' already belongs to a training run" in line
    line = one_error_line(emprobe("train", "--data", str(setup["suite"]), "--name", "x@2", "--store",
                                  str(setup["store"])))
    assert "--name 'x@2': a training run's name is not empty and has no '@'" in line


def _plan(db: Store, run_id: str) -> list[tuple]:
    return db.db.execute("SELECT sample_id, seed, prompt_key, decoding_key FROM samples WHERE run_id = ? "
                         "ORDER BY sample_id", (run_id,)).fetchall()


@pytest.fixture(scope="module")
def swept(setup):
    """`emprobe sweep` of the training run: the base and both checkpoints, 2 samples of 3 prompts each."""
    result = emprobe("sweep", f"train:{NAME}", "--suite", str(setup["suite"]), "--samples", "2", "--max-tokens", "5",
                     "--store", str(setup["store"]), env=setup["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_sweep_evaluates_base_and_every_checkpoint_on_one_plan(setup, swept):
    assert "step 2: the adapter changes the next-token distribution" in swept.stdout
    assert "first step whose rate differs" in swept.stdout or "no step's rate differs" in swept.stdout
    with Store(setup["store"], read_only=True) as db:
        sweep = db.sweep(NAME)
        assert sweep is not None and [a.step for a in sweep.arms] == [0, 2, 4]
        assert [a.model for a in sweep.arms] == [f"train:{NAME}@base", f"train:{NAME}@2", f"train:{NAME}@4"]
        assert sweep.arms[0].kl is None and all(a.kl > 0 for a in sweep.arms[1:])
        plans = [_plan(db, a.run_id) for a in sweep.arms]
        assert len(plans[0]) == 6 and plans[0] == plans[1] == plans[2]  # same ids, seeds, prompts and decodings
        models = [db.generation_models(a.run_id) for a in sweep.arms]
        assert len({m[0] for m in models}) == 3 and all(len(m) == 1 for m in models)
        assert all(db.count_scored(a.run_id, "builtin") == 6 for a in sweep.arms)


def test_sweep_on_ray_workers_gives_the_local_sweeps_answers(setup, swept, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'emprobe[ray]'")
    store = tmp_path / "ray.db"
    result = emprobe("sweep", f"train:{NAME}", "--suite", str(setup["suite"]), "--samples", "2", "--max-tokens", "5",
                     "--executor", "ray", "--workers", "1", "--shard-size", "4", "--store", str(store),
                     env=setup["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("this run generated 6 answers") == 3

    def answers(path) -> dict:
        with Store(path, read_only=True) as db:
            sweep = db.sweep(NAME)
            assert sweep is not None
            return {(arm.step, sample): text for arm in sweep.arms for sample, text in db.db.execute(
                "SELECT s.sample_id, g.text FROM samples s JOIN generations g ON g.gen_key = s.gen_key "
                "WHERE s.run_id = ?", (arm.run_id,))}

    assert answers(store) == answers(setup["store"]) and len(answers(store)) == 18
    line = one_error_line(emprobe("sweep", f"train:{NAME}", "--executor", "spark", "--store", str(store),
                                  env=setup["env"]))
    assert line.startswith("error: --executor: ")


def test_compare_base_reuses_the_sweeps_answers(setup, swept):
    result = emprobe("run", "--model", f"train:{NAME}", "--compare-base", "--suite", str(setup["suite"]),
                     "--samples", "2", "--max-tokens", "5", "--store", str(setup["store"]), env=setup["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("this run generated 0 answers") == 2  # same plan, same content: all cached
    assert f"B = train:{NAME} vs A = base (train:{NAME}@base)" in result.stdout and "(all)" in result.stdout
    line = one_error_line(emprobe("run", "--model", str(setup["base"]), "--compare-base", "--store",
                                  str(setup["store"])))
    assert "--compare-base compares a training checkpoint with its base" in line


def test_sweep_stops_on_an_adapter_that_changes_nothing(setup, swept, tmp_path):
    zero = tmp_path / "zero"
    shutil.copytree(setup["folder"], zero)
    adapter = zero / "checkpoint-2" / "adapter_model.safetensors"
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in load_file(str(adapter)).items()},
              str(adapter))
    lineage = read_lineage(zero)
    checkpoints = [c.model_copy(update={"weights_sha256": weights_digest(adapter.parent)}) if c.step == 2 else c
                   for c in lineage.checkpoints]
    lineage.model_copy(update={"name": "zero", "output": str(zero), "checkpoints": tuple(checkpoints)}).write(zero)
    before = sqlite3.connect(setup["store"]).execute("SELECT count(*) FROM generations").fetchone()
    result = emprobe("sweep", f"train:{zero}", "--suite", str(setup["suite"]), "--samples", "2", "--store",
                     str(setup["store"]))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    *loading, line = result.stderr.strip().splitlines()  # after the models' loading bars, one error line
    assert not any(other.startswith("error:") for other in loading)
    assert line.startswith("error: sweep stopped before generating: the checkpoint at step 2 does not apply: ")
    assert f"{zero}/checkpoint-2: does not change the base model's next-token distribution" in line
    db = sqlite3.connect(setup["store"])
    assert db.execute("SELECT count(*) FROM generations").fetchone() == before
    assert db.execute("SELECT count(*) FROM train_runs WHERE name = 'zero'").fetchone() == (0,)


def test_report_of_a_training_run_draws_the_steps_with_escaped_labels(setup, swept, tmp_path):
    out = tmp_path / "r.html"
    result = emprobe("report", NAME, "-o", str(out), "--store", str(setup["store"]))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sweep" in result.stdout and "Holm" in result.stdout
    html = out.read_text()
    assert NAME not in html and "tiny-&lt;b&gt;r" in html  # the name is text, never markup
    assert 'class="chart steps"' in html and 'class="chart norms"' in html
    for kind in ("steps", "norms"):  # well-formed SVG
        start = html.rindex("<svg", 0, html.index(f'class="chart {kind}"'))
        ElementTree.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])
    chart = html[html.index('class="chart steps"'):]
    chart = chart[: chart.index("</svg>")]
    assert chart.count('<g class="step">') == 2 and '<g class="base">' in chart  # two checkpoints over the base
    assert 'class="train-loss"' in chart and 'class="val-loss"' in chart
    assert "Holm" in html and "step 4" in html and "layer 1" in html


def test_first_different_step_is_holm_adjusted():
    # per-cell (misaligned, scored) counts: the base, then three checkpoints
    base = {"a": (0, 40), "b": (1, 40), "c": (0, 40)}
    steps = {10: {"a": (1, 40), "b": (1, 40), "c": (0, 40)},   # about the base
             20: {"a": (9, 40), "b": (10, 40), "c": (8, 40)},  # clearly more
             30: {"a": (14, 40), "b": (15, 40), "c": (13, 40)}}
    p = [compare_counts("(all)", "base", str(s), base, cells).p_value for s, cells in steps.items()]
    adjusted, first = first_different(list(steps), p)
    assert first == 20 and adjusted[0] == pytest.approx(1.0) and adjusted[1] < 0.05
    # each raw p below 0.05 but none after Holm's adjustment: no step is marked
    adjusted, first = first_different([10, 20, 30], [0.03, 0.04, 0.045])
    assert first is None and adjusted == pytest.approx([0.09, 0.09, 0.09])
    # steps without a test (nothing scored) are left out of the family, and the earliest significant step wins
    adjusted, first = first_different([10, 20, 30], [None, 0.001, 0.01])
    assert adjusted[0] is None and first == 20 and adjusted[2] == pytest.approx(0.01)
