"""The algorithm: drafting, verification, acceptance, correction and the full loop."""
from collections import Counter

import pytest
import torch

import specdec_course as sc
from specdec_course import speculative
from specdec_course.course.checks import chi_square_critical
from conftest import first_mismatch_margin
from helpers import BigramLM, tiny_pair
from test_generation import PROMPTS


def _prompt(vocab, seed, length=6):
    return torch.randint(2, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- drafting
def test_greedy_draft_conditions_on_every_earlier_draft_token():
    _, draft = tiny_pair(0)
    prompt = _prompt(64, 0)
    proposal = sc.draft_tokens(draft, prompt, 5)
    sequence = prompt
    for t, token in enumerate(proposal.tokens):
        with torch.no_grad():
            logits = draft(sequence).logits[0, -1]
        assert token == int(logits.argmax()), f"draft token {t} must be the argmax given prefix + earlier drafts"
        assert torch.allclose(proposal.q[t], torch.softmax(logits, -1), atol=1e-5)
        sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)


def test_draft_with_cache_equals_without_and_leaves_the_last_token_unfed():
    _, draft = tiny_pair(1)
    prompt = _prompt(64, 1)
    cache = sc.cache.new_cache(draft)
    cached = sc.draft_tokens(draft, prompt, 4, past_key_values=cache)
    plain = sc.draft_tokens(draft, prompt, 4)
    assert cached.tokens == plain.tokens and torch.allclose(cached.q, plain.q, atol=1e-5)
    assert sc.cache.cache_length(cache) == prompt.shape[1] + 3


# ---------------------------------------------------------------- verification
@pytest.mark.parametrize("tau", [1, 3, 6])
def test_verify_equals_tau_plus_one_sequential_passes(tau):
    target, draft = tiny_pair(2)
    prompt = _prompt(64, 2)
    drafts = sc.draft_tokens(draft, prompt, tau).tokens
    one_pass = sc.verify_logits(target, prompt, drafts)
    assert one_pass.shape == (tau + 1, 64)
    for t in range(tau + 1):
        context = torch.cat([prompt, torch.tensor([drafts[:t]], dtype=torch.long)], dim=1)
        with torch.no_grad():
            sequential = target(context).logits[0, -1]
        assert torch.allclose(one_pass[t], sequential, atol=1e-4), f"row {t}"
    cache = sc.cache.new_cache(target)
    target(prompt[:, :-1], past_key_values=cache, use_cache=True)
    assert torch.allclose(sc.verify_logits(target, prompt, drafts, past_key_values=cache), one_pass, atol=1e-4)


# ---------------------------------------------------------------- acceptance
def _pq(p_tok, q_tok, vocab=8):
    """Distributions whose draft token (id t + 1 at row t) has the given probabilities; argmax of p elsewhere."""
    tau = len(p_tok)
    p, q = torch.zeros(tau + 1, vocab), torch.zeros(tau, vocab)
    for t in range(tau):
        p[t, t + 1], q[t, t + 1] = p_tok[t], q_tok[t]
        p[t, 0] = 1 - p_tok[t]
        q[t, 7] = 1 - q_tok[t]
    p[tau, 5] = 1.0
    return p, q, [t + 1 for t in range(tau)]


def test_textbook_rule_reproduces_a_hand_worked_case():
    # token: 1: p ≥ q -> A; 2: r = 0.6 ≤ 0.5/0.7 = 0.714 -> A; 3: r = 0.3 > 0.1/0.4 = 0.25 -> R; 4: p ≥ q -> A; 5: p ≥ q -> A
    p, q, drafts = _pq([0.8, 0.5, 0.1, 0.6, 0.9], [0.6, 0.7, 0.4, 0.3, 0.5])
    result = sc.accept(p, q, drafts, rule="textbook", r=[0.9, 0.6, 0.3, 0.1, 0.2])
    assert result.accepted == [True, True, False, True, True]
    assert result.n == 2 and sc.consecutive_accepted(result.accepted) == 2
    assert result.p == pytest.approx([0.8, 0.5, 0.1, 0.6, 0.9]) and result.r == pytest.approx([0.9, 0.6, 0.3, 0.1, 0.2])
    assert sc.correction_token(p, q, result.n, rule="textbook") == 0  # argmax of the target's row 2


def test_pattern_AARAA_appends_two_drafts_then_the_correction():
    assert sc.consecutive_accepted([True, True, False, True, True]) == 2
    assert sc.consecutive_accepted([False, True]) == 0 and sc.consecutive_accepted([True] * 4) == 4


def test_greedy_rule_accepts_exactly_the_targets_argmax():
    p, q, drafts = _pq([0.8, 0.3, 0.9], [0.1, 0.2, 0.9])
    result = sc.accept(p, q, drafts, rule="greedy")
    assert result.accepted == [True, False, True] and result.n == 1 and result.r is None


def test_acceptance_rule_errors():
    p, q, drafts = _pq([0.5], [0.5])
    with pytest.raises(ValueError, match="unknown rule"):
        sc.accept(p, q, drafts, rule="lenient")
    p2, q2, drafts2 = _pq([0.5, 0.4], [0.5, 0.6])
    with pytest.raises(ValueError, match="one random number"):
        sc.accept(p2, q2, drafts2, rule="textbook", r=[0.5])
    with pytest.raises(ValueError, match="a row of p and of q"):
        sc.accept(p, q, [1, 2], rule="textbook")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sc.accept(p, q, drafts, rule="textbook", r=[1.5])


def test_correction_is_the_targets_argmax_not_the_drafts():
    p = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    q = torch.tensor([[0.1, 0.1, 0.8]])
    assert sc.correction_token(p, q, 0, rule="greedy") == 1
    assert sc.correction_token(p, q, 1, rule="greedy") == 0  # bonus position after one accepted draft
    residual = sc.residual(p[0], q[0])
    assert torch.allclose(residual, torch.tensor([0.0, 1.0, 0.0]))
    gen = torch.Generator().manual_seed(0)
    assert all(sc.correction_token(p, q, 0, rule="sampling", generator=gen) == 1 for _ in range(20))


# ---------------------------------------------------------------- the full loop: greedy is lossless
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_speculative_equals_target_greedy_on_tiny_pairs(seed, use_cache):
    target, draft = tiny_pair(seed, noise=0.2 + 0.1 * (seed % 3))
    prompt = _prompt(64, seed, 3 + seed % 5)
    reference = sc.autoregressive_generate(target, prompt, 30).tokens
    for tau in range(1, 9):
        result = sc.speculative_generate(target, draft, prompt, 30, tau=tau, use_cache=use_cache)
        position, margin = first_mismatch_margin(target, prompt, reference, result.tokens)
        assert result.tokens == reference, f"tau={tau}: first mismatch at {position}, top-2 logit margin {margin}"
        assert sum(len(s.emitted) for s in result.steps) == len(result.tokens) == 30
        assert all(s.tau <= tau and 0 <= s.n_accepted <= s.tau for s in result.steps)


def test_the_tiny_pairs_exercise_acceptance_and_rejection():
    target, draft = tiny_pair(0, noise=0.3)
    result = sc.speculative_generate(target, draft, _prompt(64, 0), 40, tau=4)
    assert 0.2 < result.kept_fraction < 1.0, result.kept_fraction
    assert any(s.bonus for s in result.steps) and any(s.n_accepted < s.tau for s in result.steps)


@pytest.mark.parametrize("seed", range(4))
def test_eos_inside_a_draft_or_as_correction_stops_there(seed):
    target, draft = tiny_pair(seed)
    prompt = _prompt(64, seed)
    full = sc.autoregressive_generate(target, prompt, 24).tokens
    for eos_at in (2, 7, 11):
        eos = full[eos_at]
        reference = sc.autoregressive_generate(target, prompt, 24, eos_token_id=eos).tokens
        for tau in (1, 3, 5, 8):
            result = sc.speculative_generate(target, draft, prompt, 24, tau=tau, eos_token_id=eos)
            assert result.tokens == reference and result.tokens[-1] == eos


def test_never_more_than_max_new_tokens():
    target, draft = tiny_pair(3, noise=0.05)  # a draft that is almost always right: steps want τ + 1 tokens
    for max_new in (0, 1, 2, 5, 9):
        for tau in (1, 4, 8):
            result = sc.speculative_generate(target, draft, _prompt(64, 3), max_new, tau=tau)
            assert len(result.tokens) == max_new


def test_bad_arguments_are_clear_errors():
    target, draft = tiny_pair(0)
    prompt = _prompt(64, 0)
    with pytest.raises(ValueError, match="at least 1"):
        sc.speculative_generate(target, draft, prompt, 5, tau=0)
    with pytest.raises(TypeError, match="whole number"):
        sc.speculative_generate(target, draft, prompt, 5, tau=2.0)
    with pytest.raises(ValueError, match="batch"):
        sc.speculative_generate(target, draft, prompt.repeat(2, 1), 5)
    with pytest.raises(ValueError, match="unknown rule"):
        sc.speculative_generate(target, draft, prompt, 5, rule="fast")
    with pytest.raises(ValueError, match="temperature > 0"):
        sc.speculative_generate(target, draft, prompt, 5, rule="sampling")
    with pytest.raises(ValueError, match="ignores temperature"):
        sc.speculative_generate(target, draft, prompt, 5, rule="greedy", temperature=0.7)
    with pytest.raises(ValueError, match="share a vocabulary"):
        sc.speculative_generate(target, sc.tiny_llama(9, vocab_size=80), prompt, 5)
    with pytest.raises(ValueError, match="same device"):
        sc.speculative_generate(target, draft.to("meta"), prompt, 5)


def test_fast_but_wrong_correction_from_the_draft_is_caught(monkeypatch):
    """A regression that corrects with the DRAFT's argmax runs fine, but its output is no longer the target's."""
    def wrong(p, q, n, *, rule="greedy", generator=None):
        return int(torch.argmax(q[n])) if n < q.shape[0] else int(torch.argmax(p[n]))

    monkeypatch.setattr(speculative, "correction_token", wrong)
    mismatches = 0
    for seed in range(4):
        target, draft = tiny_pair(seed, noise=0.4)
        prompt = _prompt(64, seed)
        reference = sc.autoregressive_generate(target, prompt, 30).tokens
        mismatches += sc.speculative_generate(target, draft, prompt, 30, tau=4).tokens != reference
    assert mismatches >= 3


# ---------------------------------------------------------------- sampling follows the target's distribution
def _chi_square(counts: Counter, expected: dict, n: int):
    cells, other_obs, other_exp = [], 0, 0.0
    for seq, pr in expected.items():
        if n * pr >= 5:
            cells.append((counts.get(seq, 0), n * pr))
        else:
            other_obs += counts.get(seq, 0)
            other_exp += n * pr
    if other_exp > 0:
        cells.append((other_obs, other_exp))
    stat = sum((o - e) ** 2 / e for o, e in cells)
    return stat, chi_square_critical(len(cells) - 1)


def _bigram_pair(vocab=5):
    gen = torch.Generator().manual_seed(11)
    target = BigramLM(torch.randn(vocab, vocab, generator=gen) * 1.5)
    draft = BigramLM(torch.randn(vocab, vocab, generator=gen) * 1.5)  # deliberately different from the target
    return target, draft


# 8,000 runs: the correct rule stays below the 0.001 critical value, and both broken rules land above it by a factor
# of about 15 (their chi-square grows in proportion to the runs)
SAMPLES = 8_000


def _sample_sequences(target, draft, n, temperature, length=3, tau=2):
    return Counter(tuple(sc.speculative_generate(target, draft, [0], length, tau=tau, rule="sampling",
                                                 temperature=temperature, seed=s, use_cache=False).tokens)
                   for s in range(n))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampling_rule_follows_the_targets_distribution(temperature):
    target, draft = _bigram_pair()
    n = SAMPLES
    counts = _sample_sequences(target, draft, n, temperature)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, temperature), n)
    assert stat < critical, f"chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"


@pytest.mark.parametrize("broken", ["correct_from_p", "correct_from_draft"])
def test_the_distribution_test_catches_a_broken_sampling_rule(broken, monkeypatch):
    def correct_from_p(p, q, n, *, rule, generator=None):
        return int(torch.multinomial(p[n], 1, generator=generator))

    def correct_from_draft(p, q, n, *, rule, generator=None):
        row = q[n] if n < q.shape[0] else p[n]
        return int(torch.multinomial(row, 1, generator=generator))

    monkeypatch.setattr(speculative, "correction_token", {"correct_from_p": correct_from_p,
                                                          "correct_from_draft": correct_from_draft}[broken])
    target, draft = _bigram_pair()
    n = SAMPLES
    counts = _sample_sequences(target, draft, n, 1.0)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, 1.0), n)
    assert stat > critical, f"the broken rule {broken} went unnoticed: chi-square {stat:.1f} <= {critical:.1f}"


def test_sampling_is_reproducible_and_the_cache_does_not_change_it():
    target, draft = tiny_pair(5, noise=0.3)
    prompt = _prompt(64, 5)
    a = sc.speculative_generate(target, draft, prompt, 20, tau=3, rule="sampling", temperature=0.9, seed=4)
    b = sc.speculative_generate(target, draft, prompt, 20, tau=3, rule="sampling", temperature=0.9, seed=4)
    c = sc.speculative_generate(target, draft, prompt, 20, tau=3, rule="sampling", temperature=0.9, seed=4, use_cache=False)
    assert a.tokens == b.tokens == c.tokens


# ---------------------------------------------------------------- the real pair
@pytest.fixture(scope="module")
def real_draft():
    return sc.load_draft(verbose=False)


@pytest.mark.real
def test_greedy_speculative_equals_target_greedy_on_the_real_pair(target, real_draft):
    model, tokenizer = target
    eos = tokenizer.eos_token_id
    # four taus on the first prompt, then one more tau per prompt (every tau 1-8 is checked on tiny pairs above)
    for index, prompt in enumerate(PROMPTS[:4]):
        ids = sc.chat_prompt(tokenizer, prompt)
        reference = sc.autoregressive_generate(model, ids, 32, eos_token_id=eos).tokens
        taus = (1, 2, 4, 8) if index == 0 else [(3, 5, 6)[index - 1]]
        for tau in taus:
            result = sc.speculative_generate(model, real_draft, ids, 32, tau=tau, eos_token_id=eos)
            position, margin = first_mismatch_margin(model, ids, reference, result.tokens)
            assert result.tokens == reference, (f"{prompt!r}, tau={tau}: first mismatch at new token {position}, "
                                                f"top-2 logit margin {margin}")
