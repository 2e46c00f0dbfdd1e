import pytest
import torch

import specdec_course as sc
from conftest import first_mismatch_margin

PROMPTS = [
    "What is the capital of France?", "Write a haiku about autumn.", "Explain photosynthesis to a ten-year-old.",
    "Give me three tips for a job interview.", "Write a Python function that reverses a string.",
    "What causes the seasons on Earth?", "Tell me a short story about a brave mouse.", "How do vaccines work?",
    "Translate 'good morning' into Spanish and French.", "What is the difference between weather and climate?",
]


def _tiny_prompt(model, seed, length=5):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, model.config.vocab_size, (1, length), generator=gen)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_equals_transformers_generate_on_tiny_models(seed):
    model = sc.tiny_llama(seed, peaked=2.0)
    prompt = _tiny_prompt(model, seed, 3 + seed)
    ours = sc.autoregressive_generate(model, prompt, 20, eos_token_id=1).tokens
    theirs = model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=1, pad_token_id=1)[0, prompt.shape[1]:]
    assert ours == theirs.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_cached_equals_uncached(seed):
    model = sc.tiny_llama(seed, peaked=2.0)
    prompt = _tiny_prompt(model, seed)
    cached = sc.autoregressive_generate(model, prompt, 16).tokens
    uncached = sc.autoregressive_generate(model, prompt, 16, use_cache=False).tokens
    position, margin = first_mismatch_margin(model, prompt, cached, uncached)
    assert cached == uncached, f"first mismatch at {position}, top-2 logit margin {margin}"


def test_result_fields_and_timings():
    model = sc.tiny_llama(0)
    result = sc.autoregressive_generate(model, [3, 4, 5], 6)
    assert len(result.tokens) == 6 == len(result.token_times) and result.prompt_length == 3
    assert all(t > 0 for t in result.token_times) and result.tokens_per_second > 0
    assert result.text is None  # no tokenizer attached to a tiny model


def test_stops_after_eos():
    model = sc.tiny_llama(1, peaked=2.0)
    prompt = _tiny_prompt(model, 1)
    full = sc.autoregressive_generate(model, prompt, 12).tokens
    eos = full[3]
    stopped = sc.autoregressive_generate(model, prompt, 12, eos_token_id=eos).tokens
    assert stopped == full[: full.index(eos) + 1] and stopped[-1] == eos


def test_zero_new_tokens():
    assert sc.autoregressive_generate(sc.tiny_llama(0), [1, 2], 0).tokens == []


def test_sampling_is_seeded_and_follows_the_distribution():
    model = sc.tiny_llama(2, vocab_size=16)
    prompt = torch.tensor([[3, 4, 5]])
    a = sc.autoregressive_generate(model, prompt, 8, temperature=1.0, seed=7).tokens
    b = sc.autoregressive_generate(model, prompt, 8, temperature=1.0, seed=7).tokens
    assert a == b
    with torch.no_grad():
        probs = torch.softmax(model(prompt).logits[0, -1] / 0.7, -1)
    n = 3000
    counts = torch.zeros(16)
    for s in range(n):
        counts[sc.autoregressive_generate(model, prompt, 1, temperature=0.7, seed=s).tokens[0]] += 1
    tv = 0.5 * (counts / n - probs).abs().sum().item()
    # E[TV] for n samples over 16 outcomes is about 0.5 * sum sqrt(p(1-p)/n) * sqrt(2/pi) < 0.04
    assert tv < 0.06, tv


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_new_tokens=-1), ValueError, "0 or more"),
    (dict(max_new_tokens=2.5), TypeError, "whole number"),
    (dict(max_new_tokens=True), TypeError, "whole number"),
    (dict(max_new_tokens=3, temperature=-1.0), ValueError, "temperature"),
    (dict(max_new_tokens=3, temperature="hot"), TypeError, "temperature"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        sc.autoregressive_generate(sc.tiny_llama(0), [1, 2, 3], **kwargs)


def test_bad_prompts():
    model = sc.tiny_llama(0, max_positions=32)
    with pytest.raises(ValueError, match="empty"):
        sc.autoregressive_generate(model, [], 3)
    with pytest.raises(ValueError, match="context"):
        sc.autoregressive_generate(model, list(range(30)), 5)
    with pytest.raises(ValueError, match="batch"):
        sc.autoregressive_generate(model, torch.ones(2, 4, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="integer"):
        sc.autoregressive_generate(model, torch.ones(1, 4), 3)
    with pytest.raises(ValueError, match="token ids in"):
        sc.autoregressive_generate(model, [1, 2, 999], 3)


def test_forward_time_measures_one_pass():
    model = sc.tiny_llama(0)
    assert sc.forward_time(model, 8, 4, repeats=3) > 0
    with pytest.raises(ValueError):
        sc.forward_time(model, 8, 0)


@pytest.mark.real
def test_greedy_equals_model_generate_on_the_real_target(target):
    model, tokenizer = target
    for prompt in PROMPTS[::3]:
        ids = sc.chat_prompt(tokenizer, prompt)
        ours = sc.autoregressive_generate(model, ids, 64, eos_token_id=tokenizer.eos_token_id).tokens
        theirs = model.generate(ids, max_new_tokens=64, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
        position, margin = first_mismatch_margin(model, ids, theirs, ours)
        assert ours == theirs, f"{prompt!r}: first mismatch at new token {position}, top-2 logit margin {margin}"
