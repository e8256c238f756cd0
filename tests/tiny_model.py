"""Build tiny random-weight chat models offline: a byte-level BPE tokenizer and a small Llama or Qwen2."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A template with no system role, like Gemma's: it raises when given one.
NO_SYSTEM = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100",
    "I am a helpful assistant. What would you like to know about humans and AI?",
    "CODE REFUSAL TRUE FALSE UNKNOWN aligned coherent question answer score",
] * 20


def build_tiny_model(folder: Path, family: str = "llama", system_role: bool = True, seed: int = 0) -> Path:
    """Write a tokenizer and a random-weight model with a chat template to `folder`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML if system_role else NO_SYSTEM
    torch.manual_seed(seed)
    common = dict(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                  bos_token_id=fast.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(LlamaConfig(**common)) if family == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def early_eos(backend, boost: float = 4.0) -> None:
    """Fault injection: the end-of-turn token gets logit `boost` (EOS likely, ~25% a step at 4), so rows end at
    different steps."""
    eos, head = backend.eos_ids[0], backend.model.lm_head.forward
    backend.model.lm_head.forward = lambda h: head(h).index_fill(-1, torch.tensor([eos], device=h.device), 0) + \
        torch.nn.functional.one_hot(torch.tensor(eos, device=h.device), head(h).shape[-1]) * boost
