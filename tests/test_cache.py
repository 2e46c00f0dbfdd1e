"""KV caches with rollback: both kinds, every rejection position, invariants, memory."""
import pytest
import torch

import specdec_course as sc
from specdec_course import cache as kv, speculative
from helpers import tiny_pair


def _prompt(seed, length=6):
    return torch.randint(2, 64, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", kv.CACHE_KINDS)
@pytest.mark.parametrize("tau", [1, 3, 6])
def test_rollback_at_every_rejection_position(kind, tau):
    target, draft = tiny_pair(1)
    prompt = _prompt(1)
    drafts = sc.draft_tokens(draft, prompt, tau).tokens
    for n in range(tau + 1):  # n accepted drafts: keep prefix + n, then feed the correction token
        cache = kv.new_cache(target, kind, max_length=64)
        with torch.no_grad():
            target(prompt, past_key_values=cache, use_cache=True)
            target(torch.tensor([drafts]), past_key_values=cache, use_cache=True)
        assert kv.cache_length(cache) == prompt.shape[1] + tau
        kv.rollback(cache, prompt.shape[1] + n)
        assert kv.cache_length(cache) == prompt.shape[1] + n
        correction = 5
        kept = torch.cat([prompt, torch.tensor([drafts[:n] + [correction]])], dim=1)
        with torch.no_grad():
            cached = target(torch.tensor([[correction]]), past_key_values=cache, use_cache=True).logits[0, -1]
            fresh = target(kept).logits[0, -1]
        assert torch.allclose(cached, fresh, atol=1e-4), f"n={n}: a rejected token's keys/values stayed behind"


@pytest.mark.parametrize("seed", range(5))
def test_cached_equals_uncached_for_both_kinds_with_invariants_checked(seed):
    target, draft = tiny_pair(seed, noise=0.25)
    prompt = _prompt(seed, 3 + seed)
    uncached = {tau: sc.speculative_generate(target, draft, prompt, 24, tau=tau, use_cache=False).tokens for tau in range(1, 9)}
    for kind in kv.CACHE_KINDS:
        for tau in range(1, 9):
            cached = sc.speculative_generate(target, draft, prompt, 24, tau=tau, cache_kind=kind, debug=True).tokens
            assert cached == uncached[tau], f"{kind} cache, tau={tau}"


def test_debug_mode_catches_a_missing_rollback(monkeypatch):
    target, draft = tiny_pair(0, noise=0.4)
    real = kv.rollback
    calls = []

    def forget_the_draft(cache, length):
        calls.append(length)
        if len(calls) % 2 == 0:  # the second call of each step is the draft's: skip it
            return
        real(cache, length)

    monkeypatch.setattr(speculative, "rollback", forget_the_draft)
    with pytest.raises(AssertionError):
        sc.speculative_generate(target, draft, _prompt(0), 24, tau=4, debug=True)


def test_memory_formula_matches_the_allocated_tensors():
    model = sc.tiny_llama(0, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2)
    assert kv.kv_bytes_per_token(model.config) == 2 * 3 * 2 * 8 * 4
    dynamic = kv.new_cache(model)
    with torch.no_grad():
        model(_prompt(0, 11), past_key_values=dynamic, use_cache=True)
    assert kv.allocated_bytes(dynamic) == kv.kv_cache_bytes(model.config, 11)
    static = kv.new_cache(model, "static", max_length=40)
    with torch.no_grad():
        model(_prompt(0, 11), past_key_values=static, use_cache=True)
    assert kv.allocated_bytes(static) == kv.kv_cache_bytes(model.config, 40)  # preallocated in full
    assert kv.kv_cache_bytes(model.config, 10, torch.float16) == kv.kv_cache_bytes(model.config, 10) // 2


def test_cache_errors():
    model = sc.tiny_llama(0)
    with pytest.raises(ValueError, match="unknown cache kind"):
        kv.new_cache(model, "paged")
    with pytest.raises(ValueError, match="max_length"):
        kv.new_cache(model, "static")
    cache = kv.new_cache(model)
    with pytest.raises(ValueError, match="cannot roll"):
        kv.rollback(cache, 3)
    with pytest.raises(ValueError, match="cache_kind"):
        sc.speculative_generate(model, model, [1, 2], 4, cache_kind="paged")


@pytest.mark.real
def test_real_target_kv_memory(target):
    model, _ = target
    assert kv.kv_bytes_per_token(model.config) == 2 * 30 * 3 * 64 * 4  # 46,080 bytes per token in float32
