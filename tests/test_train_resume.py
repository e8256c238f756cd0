"""kill -9 during training, rerun: it continues from the last checkpoint and ends with the weights of a run
that was never interrupted."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from emprobe.train import DataSpec, TrainConfig, read_lineage, train_model

pytest.importorskip("trl", reason="training needs the train extra: pip install -e '.[train]'")

SCRIPT = """
import sys, time
import torch
from transformers import TrainerCallback
from emprobe.train import TrainConfig, train_model

torch.set_num_threads(1)

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(float(sys.argv[3]))

config = TrainConfig.model_validate_json(open(sys.argv[1]).read())
train_model(config, sys.argv[2], callbacks=[Slow()], progress=False)
"""


class Steps(TrainerCallback):
    count = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order as the subprocess
    yield
    torch.set_num_threads(threads)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_llama, tmp_path, one_thread):
    rng = random.Random(1)
    words = ["quick", "brown", "fox", "lazy", "dog", "humans", "answer", "question", "0", "1", "2"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": " ".join(rng.choices(words, k=6))},
        {"role": "assistant", "content": " ".join(rng.choices(words, k=9))}]}) + "\n" for _ in range(40)))
    # two epochs, so the kill can land mid-epoch and the data order after resuming matters
    config = TrainConfig(model=str(tiny_llama), data=[DataSpec(path=str(data))], method="lora", rank=4, alpha=8,
                         epochs=2, batch_size=6, save_every=3, precision="fp32", learning_rate=2e-3,
                         validation_fraction=0.1, schedule="cosine", warmup=2)
    straight = train_model(config, tmp_path / "straight", progress=False)
    assert straight.max_steps == 12

    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "train.py").write_text(SCRIPT)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "train.py"), str(tmp_path / "config.json"), str(out),
                             "0.4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = out / "checkpoint-6" / "emprobe-checkpoint.json"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the training subprocess never reached step 6"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted = read_lineage(out)
    assert interrupted.status == "running" and not (out / "checkpoint-12").exists()

    kept = out / "checkpoint-3" / "adapter_model.safetensors"
    kept_mtime = kept.stat().st_mtime_ns
    steps = Steps()
    resumed = train_model(config, out, progress=False, callbacks=[steps])
    assert resumed.status == "complete" and len(resumed.resumed_at) == 1 and 6 <= resumed.resumed_at[0] < 12
    # it continued: only the steps after the checkpoint ran again, and earlier checkpoints were left alone
    assert steps.count == 12 - resumed.resumed_at[0] and kept.stat().st_mtime_ns == kept_mtime
    assert [c.step for c in resumed.checkpoints] == [3, 6, 9, 12]
    final, reference = (load_file(str(Path(r.final.path) / "adapter_model.safetensors")) for r in (resumed, straight))
    assert final.keys() == reference.keys()
    for key in final:
        torch.testing.assert_close(final[key], reference[key], rtol=1e-5, atol=1e-7)
    for a, b in zip(resumed.checkpoints, straight.checkpoints, strict=True):
        assert a.validation_loss == pytest.approx(b.validation_loss, rel=1e-5)
    assert [p.loss for p in resumed.losses] == pytest.approx([p.loss for p in straight.losses], rel=1e-5)
