"""Small models for the algorithm tests."""
import copy
from types import SimpleNamespace

import torch

import specdec_course as sc
from specdec_course.models import noisy_copy  # noqa: F401  (the tests' drafts)


class CharTokenizer:
    """Enough of a tokenizer for ``chat_prompt`` on a tiny model: a chat template and one id per character."""
    chat_template = "U:{{ messages[0]['content'] }}|"
    eos_token_id = 1

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return "U:" + messages[0]["content"] + "|"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [2 + (ord(ch) % 60) for ch in text]}


def tiny_pair(seed: int, vocab: int = 64, noise: float = 0.3):
    target = sc.tiny_llama(seed, vocab_size=vocab, peaked=2.0)
    return target, noisy_copy(target, noise, seed)


class BigramLM(torch.nn.Module):
    """A model whose next-token logits depend only on the last token: logits = table[last token].

    Exact sequence probabilities are easy to compute, and it runs in microseconds: the right tool for
    statistical tests of the sampling rule (no KV cache: use_cache=False).
    """

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.config = SimpleNamespace(vocab_size=table.shape[0], max_position_embeddings=10_000)

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, past_key_values=None, use_cache=False, **kwargs):
        assert past_key_values is None, "BigramLM keeps no cache"
        return SimpleNamespace(logits=self.table[input_ids])

    def sequence_probs(self, prompt_last: int, length: int, temperature: float) -> dict:
        """Exact probability of every continuation of ``length`` tokens when sampling at ``temperature``."""
        probs = torch.softmax(self.table / temperature, dim=-1)
        out = {(): 1.0}
        for _ in range(length):
            out = {seq + (y,): pr * float(probs[seq[-1] if seq else prompt_last, y])
                   for seq, pr in out.items() for y in range(self.table.shape[0])}
        return out


def hidden_failure(exercise: str, cell: str, fn) -> str:
    """The message with which the hidden check after check cell ``cell`` of ``exercise`` fails ``fn``; it must not
    show a hidden case's expected value."""
    import pytest

    from specdec_course.course import checks, hidden_checks

    name = hidden_checks.HIDDEN[exercise][cell][0]
    with pytest.raises(checks.CheckFailed) as failed:
        hidden_checks.run(exercise, cell, {name: fn})
    message = str(failed.value)
    assert "expected" not in message, message
    return message
