"""The cost model, the two acceptance numbers, and the τ policies, on tiny models."""
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

import specdec_course as sc
from specdec_course.perf import cost_model as cm
from specdec_course.perf.analysis import greedy_matches
from specdec_course.perf.policies import CostModelPolicy, FixedTau, GrowShrink, make_policy

from helpers import tiny_pair


def step(tau, n, draft_s=0.001, verify_s=0.01, verify_tokens=None):
    return SimpleNamespace(tau=tau, n_accepted=n, draft_time=draft_s, verify_time=verify_s,
                           verify_tokens=verify_tokens or tau + 1)


def test_expected_tokens_and_kept_fraction_formulas():
    assert cm.expected_tokens_per_step(0.0, 4) == 1.0
    assert cm.expected_tokens_per_step(1.0, 4) == 5.0
    assert cm.expected_tokens_per_step(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    # κ = E[n]/τ, and it falls with τ while α stays put
    assert cm.kept_fraction(0.5, 2) == pytest.approx(0.75 / 2)
    assert cm.kept_fraction(0.6, 8) < cm.kept_fraction(0.6, 4) < cm.kept_fraction(0.6, 1) == pytest.approx(0.6)
    for alpha in (0.1, 0.37, 0.8):
        for tau in (1, 3, 8):
            assert cm.alpha_from_kept_fraction(cm.kept_fraction(alpha, tau), tau) == pytest.approx(alpha, abs=1e-9)
    with pytest.raises(ValueError, match="alpha"):
        cm.expected_tokens_per_step(1.2, 3)
    with pytest.raises(ValueError, match="kept fraction"):
        cm.alpha_from_kept_fraction(-0.1, 3)


def test_alpha_from_steps_recovers_independent_alpha_and_profile_is_flat():
    rng = random.Random(0)
    alpha, steps = 0.6, []
    for _ in range(20000):
        tau = rng.choice([1, 3, 6])
        n = 0
        while n < tau and rng.random() < alpha:
            n += 1
        steps.append(step(tau, n))
    assert cm.alpha_from_steps(steps) == pytest.approx(alpha, abs=0.01)
    profile = cm.acceptance_profile(steps)
    assert len(profile) == 6 and all(abs(a - alpha) < 0.07 for a in profile)
    assert cm.tokens_per_step_from_profile(profile, 4) == pytest.approx(cm.expected_tokens_per_step(alpha, 4), rel=0.03)
    kept = sum(s.n_accepted for s in steps) / sum(s.tau for s in steps)
    assert kept < alpha - 0.1  # the kept fraction is a different, smaller number


def test_replay_is_exact_for_greedy_speculative_decoding():
    target, draft = tiny_pair(3, noise=0.2)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(1))
    tokens = sc.autoregressive_generate(target, ids, 40).tokens
    matches = greedy_matches(draft, ids, tokens)
    assert 0 < sum(matches) < len(matches)
    for tau in (1, 2, 3, 5, 8):
        result = sc.speculative_generate(target, draft, ids, 40, tau=tau)
        assert result.tokens == tokens
        assert cm.replay_greedy(matches, tau) == (40, result.target_passes), tau


def test_replay_and_runs_on_hand_made_matches():
    matches = [True, True, False, True, True, True, False, False]
    assert cm.agreement_runs(matches) == [2, 1, 0, 3, 2, 1, 0, 0]
    # τ = 2: two accepted + the target's token (3), a run of 3 capped at 2 (+3), then two rejections (+1, +1)
    assert cm.replay_greedy(matches, 2) == (8, 4)
    assert cm.replay_greedy([False] * 5, 4) == (5, 5)
    assert cm.replay_greedy([True] * 9, 2) == (9, 3)


def test_costs_interpolate_and_predict():
    costs = cm.Costs({1: 10.0, 3: 14.0, 5: 20.0}, draft_ms=1.0)
    assert costs.verify_ms(2) == pytest.approx(12.0)
    assert costs.verify_ms(7) == pytest.approx(26.0)  # along the last segment
    assert costs.c == pytest.approx(0.1)
    assert costs.step_ms(2) == pytest.approx(2 * 1.0 + 14.0)
    assert costs.speedup(1.0, 0) == pytest.approx(1.0)
    rows = cm.predict(costs, 0.5, [1, 2], profile=[0.9, 0.1], matches=[[True, False, True]])
    assert rows[0]["speedup"] == pytest.approx(1.5 * 10 / 13)
    assert rows[1]["tokens_per_step_profile"] == pytest.approx(1 + 0.9 + 0.09)
    assert "speedup_replay" in rows[0]
    assert cm.best_tau(costs, 0.9, range(1, 9)) > cm.best_tau(costs, 0.2, range(1, 9))
    with pytest.raises(ValueError, match="T\\(1\\)"):
        cm.Costs({2: 3.0}, 1.0)


def test_measure_costs_on_a_tiny_pair():
    target, draft = tiny_pair(0)
    costs = cm.measure_costs(target, draft, ks=[1, 2, 4], prefix_length=8, repeats=2)
    assert set(costs.target_ms) == {1, 2, 4} and all(v > 0 for v in costs.target_ms.values()) and costs.draft_ms > 0
    json.dumps(costs.to_dict())


def test_policies_keep_output_identical_and_move_tau():
    target, draft = tiny_pair(5, noise=0.1)
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(2))
    reference = sc.autoregressive_generate(target, ids, 48).tokens
    for tau in ("adaptive", "heuristic", GrowShrink(start=3, max_tau=6), CostModelPolicy(start=4), 2):
        result = sc.speculative_generate(target, draft, ids, 48, tau=tau)
        assert result.tokens == reference, tau
    heuristic = sc.speculative_generate(target, draft, ids, 48, tau=GrowShrink(start=3, max_tau=6))
    taus = [s.tau for s in heuristic.steps[:-1]]
    for before, after, s in zip(taus, taus[1:], heuristic.steps):
        assert after == (min(6, before + 2) if s.n_accepted == s.tau else max(1, before - 1))


class _Scripted:
    """A policy that asks for the given τ in turn (0: the target alone, no draft), then repeats the last one."""

    def __init__(self, taus):
        self.taus, self.max_tau = list(taus), max(taus)

    def next_tau(self):
        return self.taus[0]

    def update(self, step):
        if len(self.taus) > 1:
            self.taus.pop(0)


def test_a_policy_may_choose_the_target_alone_and_the_output_stays_the_targets():
    """τ = 0 (a latency cap that no τ ≥ 1 fits): the step drafts nothing and the target yields one token; the draft's
    cache lags and catches up at the next τ ≥ 1. Greedy output stays identical, token for token, caches checked."""
    target, draft = tiny_pair(5, noise=0.1)
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    reference = sc.autoregressive_generate(target, ids, 40).tokens
    for taus in ([0], [0, 0, 3, 0, 2, 0, 0, 4, 1], [2, 0, 0, 0, 5]):
        for use_cache in (True, False):
            result = sc.speculative_generate(target, draft, ids, 40, tau=_Scripted(taus), use_cache=use_cache,
                                             debug=True)
            assert result.tokens == reference, (taus, use_cache)
            zero = [s for s in result.steps if s.tau == 0]
            assert zero and all(s.n_accepted == 0 and len(s.emitted) == 1 for s in zero)
    alone = sc.speculative_generate(target, draft, ids, 40, tau=_Scripted([0]))
    assert [s.tau for s in alone.steps] == [0] * 40 and alone.tokens == reference


def test_cost_model_policy_picks_the_predicted_best_tau():
    costs = cm.Costs({k: 10.0 + 0.3 * (k - 1) for k in range(1, 20)}, draft_ms=0.4)
    for alpha in (0.3, 0.7, 0.9):
        policy = CostModelPolicy(costs, max_tau=12)
        rng = random.Random(1)
        for _ in range(400):
            tau = policy.next_tau()
            n = 0
            while n < tau and rng.random() < alpha:
                n += 1
            policy.update(step(tau, n))
        assert abs(policy.alpha - alpha) < 0.1
        best = cm.best_tau(costs, alpha, range(1, 13))
        chosen = policy.next_tau()
        predicted = lambda t: costs.speedup(cm.expected_tokens_per_step(alpha, t), t)
        assert predicted(chosen) >= 0.95 * predicted(best), (alpha, chosen, best)


def test_cost_model_policy_learns_costs_online():
    policy = CostModelPolicy(start=3, max_tau=10)
    for i in range(60):  # verification nearly free, drafting cheap, α high: τ should grow
        tau = policy.next_tau()
        policy.update(step(tau, tau, draft_s=0.0005, verify_s=0.010 + 0.0001 * tau, verify_tokens=tau + 1))
    assert policy.next_tau() >= 8
    policy = CostModelPolicy(start=3, max_tau=10)
    for i in range(60):  # drafting as dear as verifying and α low: τ = 1
        tau = policy.next_tau()
        policy.update(step(tau, 0, draft_s=0.010 * tau, verify_s=0.010 * (tau + 1), verify_tokens=tau + 1))
    assert policy.next_tau() == 1


def test_bad_tau_values_are_refused_clearly():
    with pytest.raises(ValueError, match="adaptive"):
        make_policy("fast")
    with pytest.raises(TypeError, match="whole number"):
        make_policy(2.5)
    with pytest.raises(ValueError, match="at least 1"):
        FixedTau(0)
    with pytest.raises(ValueError, match="start"):
        GrowShrink(start=9, max_tau=4)
    with pytest.raises(ValueError, match="memory"):
        CostModelPolicy(memory=0)
    assert math.isnan(cm.alpha_from_steps([]))


def test_a_runs_predicted_speedup_counts_prompt_passes_and_the_steps_actual_tau():
    from specdec_course.perf.cost_model import Costs, expected_tokens_per_step, predicted_run_speedup

    costs = Costs({1: 10.0, 2: 11.0, 3: 12.0, 5: 14.0}, 2.0, target_overhead_ms=1.0, overhead_ms=1.0)
    # a run of steps with τ = 2 only, no prompt passes: the steady-state formula
    steady = predicted_run_speedup(costs, 0.8, [2] * 10, 100)
    assert steady == pytest.approx(expected_tokens_per_step(0.8, 2) * 11.0 / (2 * 2.0 + 12.0 + 1.0))
    # steps where the drafter proposed nothing are plain target steps: a run of only those is no faster
    assert predicted_run_speedup(costs, 0.8, [0] * 10, 100) == pytest.approx(1.0)
    # mixing them in lowers the prediction; so does a drafter's own pass over the prompt
    mixed = predicted_run_speedup(costs, 0.8, [2, 0] * 5, 100)
    assert 1.0 < mixed < steady
    with_prompt = predicted_run_speedup(costs, 0.8, [2] * 10, 100, target_prefill_ms=50.0)
    both = predicted_run_speedup(costs, 0.8, [2] * 10, 100, target_prefill_ms=50.0, draft_prefill_ms=30.0)
    alone = 50.0 + 100 * 11.0
    assert with_prompt == pytest.approx(alone / (50.0 + 100 / expected_tokens_per_step(0.8, 2) * 17.0))
    assert both == pytest.approx(alone / (80.0 + 100 / expected_tokens_per_step(0.8, 2) * 17.0)) and both < with_prompt
    with pytest.raises(ValueError, match="τ"):
        predicted_run_speedup(costs, 0.8, [], 100)


def test_a_cost_set_scaled_keeps_its_ratios_and_reads_back():
    costs = cm.Costs({1: 10.0, 2: 11.0, 5: 14.0}, 2.0, draft_step_ms=1.0, overhead_ms=0.5, target_overhead_ms=0.5)
    slower = costs.scaled(1.5)
    assert slower.target_ms[5] == pytest.approx(21.0) and slower.draft_ms == pytest.approx(3.0)
    assert slower.c == pytest.approx(costs.c) and slower.scale == pytest.approx(1.5)
    for tau in (1, 3):
        assert slower.speedup(2.0, tau) == pytest.approx(costs.speedup(2.0, tau))
    assert cm.Costs.from_dict(json.loads(json.dumps(slower.to_dict()))).step_ms(3) == pytest.approx(slower.step_ms(3))
    with pytest.raises(ValueError, match="factor > 0"):
        costs.scaled(0.0)


@pytest.mark.parametrize("drift", [1.25])
def test_the_benchmarks_prediction_holds_when_the_costs_were_measured_at_another_speed(drift):
    """Set costs on a simulated clock (T(k) = 40 + 4 (k − 1) ms, d = 3 ms), and a cost set measured while the machine
    ran ``drift`` times as slow. The benchmark scales the set to its own target-only pace, so its prediction matches
    what it measures. (Taking the difference as a loop overhead o₁ = −10 ms with o clamped at 0 predicted 0.8x of the
    measured speedup for every τ.)"""
    from specdec_course.perf import clock
    from specdec_course.perf.benchmark import run_benchmark

    from helpers import CharTokenizer

    target, draft = tiny_pair(0, noise=0.25)
    true = cm.Costs({k: 40.0 + 4.0 * (k - 1) for k in range(1, 10)}, 3.0)
    with clock.simulated_costs(target, draft):
        report = run_benchmark(target, draft, CharTokenizer(), taus=[1, 2, 4], max_new_tokens=24, kinds=("static",),
                               prompts=["the first prompt", "a second, longer prompt"], costs=true.scaled(drift),
                               progress=False)
    assert report["prediction"]["costs"]["scale"] == pytest.approx(1.0)  # back to the true costs: scaled 1 / drift
    assert cm.Costs.from_dict(report["prediction"]["costs"]).target_ms[1] == pytest.approx(40.0, rel=1e-6)
    rows = [r for r in report["rows"] if r["config"] == "speculative, static cache"]
    assert len(rows) == 3 and all(r["identical"] for r in rows)
    for r in rows:  # the replay is exact for greedy decoding: what is left is the draft's extra passes per step
        assert r["predicted_replay"] == pytest.approx(r["ratio"], rel=0.08), r
