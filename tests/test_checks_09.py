"""Exercise 09's checks (visible and hidden) accept right answers, name the usual mistakes, and the α-c plane helpers
agree with the cost model. Tiny models and hand-made numbers only."""
import pytest
import torch

from helpers import hidden_failure
from specdec_course.course import checks, hidden_checks, references
from specdec_course.draft import Draft
from specdec_course.drafters import Drafter, find_continuation as reference_continuation


def find_continuation(tokens, tau, max_ngram=3):
    return reference_continuation(tokens, tau, max_ngram=max_ngram)


def drafter_speedup(alpha, c, tau, cost_curve):
    tokens = tau + 1 if alpha == 1 else (1 - alpha ** (tau + 1)) / (1 - alpha)
    return tokens / (tau * c + cost_curve[tau + 1])


def mix_speedup(alphas, c, tau, cost_curve, mix):
    return 1 / sum(share / drafter_speedup(alphas[kind], c, tau, cost_curve) for kind, share in mix.items() if share)


def choose_drafter(table, cost_curve, memory_mb=None, max_step=None, max_tau=8, *, ignore_memory=False, ignore_step=False):
    best, best_speedup = ("target only", 0), 1.0
    for name, row in table.items():
        if memory_mb is not None and row["memory_mb"] > memory_mb and not ignore_memory:
            continue
        for tau in range(1, max_tau + 1):
            if max_step is not None and tau * row["c"] + cost_curve[tau + 1] > max_step and not ignore_step:
                continue
            speedup = drafter_speedup(row["alpha"], row["c"], tau, cost_curve)
            if speedup > best_speedup:
                best, best_speedup = (name, tau), speedup
    return best


class ContextBigramDrafter(Drafter):
    def __init__(self, vocab_size):
        self._vocab_size = vocab_size

    @property
    def vocab_size(self):
        return self._vocab_size

    def propose(self, sequence, tau, *, temperature=0.0, generator=None):
        tokens = sequence[0].tolist()
        follows = dict(zip(tokens, tokens[1:]))  # later pairs overwrite earlier ones
        proposal, last = [], tokens[-1]
        while len(proposal) < tau and last in follows:
            last = follows[last]
            proposal.append(last)
        q = torch.zeros(len(proposal), self._vocab_size)
        q[torch.arange(len(proposal)), torch.tensor(proposal, dtype=torch.long)] = 1.0
        return Draft(tokens=proposal, q=q)


def test_right_answers_pass_the_visible_and_the_hidden_checks(capsys):
    checks.check_find_continuation(find_continuation)
    checks.check_mix_speedup(drafter_speedup, mix_speedup)
    checks.check_choose_drafter(choose_drafter)
    checks.check_own_drafter(ContextBigramDrafter)
    namespace = {"find_continuation": find_continuation, "mix_speedup": mix_speedup,
                 "choose_drafter": choose_drafter, "ContextBigramDrafter": ContextBigramDrafter}
    for cell in hidden_checks.HIDDEN["09_choosing_a_drafter"]:
        hidden_checks.run("09_choosing_a_drafter", cell, namespace)
    out = capsys.readouterr().out
    assert out.count("✓") == 8


def test_the_expected_choices_differ_from_case_to_case():
    """The choice check means something: its cases expect several different drafters, and the target alone."""
    names = set()
    for curve in checks.COST_CURVES.values():
        for memory_mb, max_step in ((None, None), (50, None), (0, None), (None, 0.9)):
            options = references.drafter_options(checks.DRAFTER_TABLE, curve, memory_mb, max_step, 8)
            names.add(max(options, key=options.get)[0])
    assert names == {"quantized copy", "draft model", "prompt lookup", "target only"}


def test_stubs_are_not_attempted():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    class Stub(ContextBigramDrafter):
        def propose(self, sequence, tau, **kwargs):
            raise NotImplementedError()

    for check, args in ((checks.check_find_continuation, (stub,)), (checks.check_mix_speedup, (stub, stub)),
                        (checks.check_mix_speedup, (drafter_speedup, stub)), (checks.check_choose_drafter, (stub,)),
                        (checks.check_own_drafter, (Stub,))):
        with pytest.raises(checks.NotAttempted, match="not attempted yet"):
            check(*args)


def test_the_usual_lookup_mistakes_are_named():
    def oldest(tokens, tau, max_ngram=3):
        return references.continuation(tokens, tau, max_ngram, oldest=True)

    def shortest_first(tokens, tau, max_ngram=3):
        return references.continuation(tokens, tau, max_ngram, shortest_first=True)

    with pytest.raises(checks.CheckFailed, match="OLDEST occurrence"):
        checks.check_find_continuation(oldest)
    with pytest.raises(checks.CheckFailed, match="LONGEST n-gram first"):
        checks.check_find_continuation(shortest_first)
    with pytest.raises(checks.CheckFailed, match="at most τ"):
        checks.check_find_continuation(lambda tokens, tau, max_ngram=3: find_continuation(tokens, tau + 1, max_ngram))
    assert "OLDEST occurrence" in _hidden_failure("s0904", oldest)


def test_the_usual_speedup_and_choice_mistakes_are_named():
    def verifies_tau_tokens(alpha, c, tau, curve):
        return drafter_speedup(alpha, c, tau, {k + 1: v for k, v in curve.items()})

    def free_verification(alpha, c, tau, curve):
        return drafter_speedup(alpha, c, tau, {k: 1.0 for k in curve})

    with pytest.raises(checks.CheckFailed, match=r"T\(τ \+ 1\), not T\(τ\)"):
        checks.check_mix_speedup(verifies_tau_tokens, mix_speedup)
    with pytest.raises(checks.CheckFailed, match="which is 1 only on a flat curve"):
        checks.check_mix_speedup(free_verification, mix_speedup)
    with pytest.raises(checks.CheckFailed, match="MB; the budget is"):
        checks.check_choose_drafter(lambda *a, **k: choose_drafter(*a, **k, ignore_memory=True))
    with pytest.raises(checks.CheckFailed, match="> max_step"):
        checks.check_choose_drafter(lambda *a, **k: choose_drafter(*a, **k, ignore_step=True))
    assert "not an allowed choice" in _hidden_failure(
        "s0910", lambda *a, **k: choose_drafter(*a, **k, ignore_memory=True))


def test_the_usual_mix_mistakes_are_named_visible_and_hidden():
    def mean_of_speedups(alphas, c, tau, cost_curve, mix):
        return sum(share * drafter_speedup(alphas[kind], c, tau, cost_curve) for kind, share in mix.items())

    def at_mean_alpha(alphas, c, tau, cost_curve, mix):
        return drafter_speedup(sum(share * alphas[kind] for kind, share in mix.items()), c, tau, cost_curve)

    def free_verification(alphas, c, tau, cost_curve, mix):
        return mix_speedup(alphas, c, tau, {k: 1.0 for k in cost_curve}, mix)

    with pytest.raises(checks.CheckFailed, match="times add up, not speeds"):
        checks.check_mix_speedup(drafter_speedup, mean_of_speedups)
    with pytest.raises(checks.CheckFailed, match="S is not linear in α"):
        checks.check_mix_speedup(drafter_speedup, at_mean_alpha)
    assert "times add up, not speeds" in _hidden_failure("s0907", mean_of_speedups)
    assert "S is not linear in α" in _hidden_failure("s0907", at_mean_alpha)
    _hidden_failure("s0907", free_verification)


def test_the_mix_example_of_the_task():
    curve = checks.COST_CURVES["CPU-like"]
    assert mix_speedup({"code": 0.8, "chat": 0.2}, 0.0, 4, curve, {"code": 0.5, "chat": 0.5}) == pytest.approx(1.274, abs=1e-3)
    assert references.mix_speedup({"code": 0.8, "chat": 0.2}, 0.0, 4, curve, {"code": 0.5, "chat": 0.5}) == \
        pytest.approx(1.274, abs=1e-3)


def test_the_bigram_rule_on_the_tasks_example_and_its_edges():
    assert references.bigram_proposal([4, 7, 4, 9, 7, 4], 3) == [9, 7, 4]
    assert references.bigram_proposal([4, 7, 4, 9, 7, 4], 3, first=True) == [7, 4, 7]
    assert references.bigram_proposal([1, 2, 3, 1, 5], 4) == []          # the last token occurs once: no follower
    assert references.bigram_proposal([3, 3, 3], 4) == [3, 3, 3, 3]
    assert references.bigram_proposal([7], 3) == [] and references.bigram_proposal([4, 7, 4], 0) == []
    drafter = ContextBigramDrafter(16)
    for description, sequence, tau in checks.BIGRAM_CASES:
        assert drafter.propose(torch.tensor([sequence]), tau).tokens == references.bigram_proposal(sequence, tau)


def test_a_drafter_that_ignores_the_rule_fails_visible_and_hidden():
    class TokenZero(ContextBigramDrafter):  # lossless whatever it proposes, but not the rule
        def propose(self, sequence, tau, **kwargs):
            q = torch.zeros(tau, self.vocab_size)
            q[:, 0] = 1.0
            return Draft([0] * tau, q)

    class FirstFollower(ContextBigramDrafter):  # a table that keeps the FIRST follower of each token
        def propose(self, sequence, tau, **kwargs):
            proposal = references.bigram_proposal(sequence[0].tolist(), tau, first=True)
            q = torch.zeros(len(proposal), self.vocab_size)
            q[torch.arange(len(proposal)), torch.tensor(proposal, dtype=torch.long)] = 1.0
            return Draft(proposal, q)

    with pytest.raises(checks.CheckFailed, match="wrong tokens from position 0"):
        checks.check_own_drafter(TokenZero)
    with pytest.raises(checks.CheckFailed, match="FIRST followers"):
        checks.check_own_drafter(FirstFollower)
    _hidden_failure("s0913", TokenZero)
    assert "FIRST followers" in _hidden_failure("s0913", FirstFollower)


def _hidden_failure(cell, fn) -> str:
    return hidden_failure("09_choosing_a_drafter", cell, fn)


def test_a_drafter_that_breaks_the_contract_is_caught():
    class ZeroQ(ContextBigramDrafter):
        def propose(self, sequence, tau, **kwargs):
            proposal = super().propose(sequence, tau, **kwargs)
            return Draft(proposal.tokens, torch.zeros_like(proposal.q))

    class TooMany(ContextBigramDrafter):
        def propose(self, sequence, tau, **kwargs):
            return super().propose(sequence, tau + 1, **kwargs)

    class NothingEver(ContextBigramDrafter):
        def propose(self, sequence, tau, **kwargs):
            return Draft([], torch.zeros(0, self.vocab_size))

    with pytest.raises(checks.CheckFailed, match="one-hot at its proposed token"):
        checks.check_own_drafter(ZeroQ)
    with pytest.raises(checks.CheckFailed, match="at most τ"):
        checks.check_own_drafter(TooMany)
    with pytest.raises(checks.CheckFailed, match="the rule gives τ"):
        checks.check_own_drafter(NothingEver)
    _hidden_failure("s0913", ZeroQ)


def test_best_speedup_is_the_cost_models_best_over_tau():
    from specdec_course.perf.analysis import expected_speedup
    from specdec_course.course.viz import best_speedup

    curve = {1: 1.0, 2: 1.1, 3: 1.3, 4: 1.35, 5: 1.6}
    for alpha, c in ((0.0, 0.0), (0.5, 0.1), (0.99, 0.55), (1.0, 0.02)):
        speedup, tau = best_speedup(alpha, c, curve)
        assert speedup == pytest.approx(max(expected_speedup(alpha, t, c, curve[t + 1]) for t in range(1, 5)))
        assert speedup == pytest.approx(expected_speedup(alpha, tau, c, curve[tau + 1]))
    from specdec_course.course.viz import speedup_grid

    alphas, cs = [0.0, 0.3, 0.9, 1.0], [0.0, 0.05, 0.7]
    grid = speedup_grid(alphas, cs, curve)
    assert grid.shape == (4, 3)
    for i, alpha in enumerate(alphas):
        for j, c in enumerate(cs):
            assert grid[i, j] == pytest.approx(best_speedup(alpha, c, curve)[0])
    assert best_speedup(0.9, 0.0, {"1": 1.0, "2": 1.0, "3": 1.0})[1] == 2  # keys as read from JSON; only τ with T(τ+1)
    assert best_speedup(0.9, 0.0, curve, taus=[1])[1] == 1
    with pytest.raises(ValueError, match="T\\(k\\)/T\\(1\\)"):
        best_speedup(0.5, 0.1, {1: 1.0})


def test_the_alpha_c_plane_draws_contours_and_every_point():
    import matplotlib

    matplotlib.use("Agg")
    from specdec_course.course.viz import plot_alpha_c_plane

    curve = {k: 1 + 0.08 * (k - 1) for k in range(1, 10)}
    points = [{"label": "copy", "alpha": 0.99, "c": 0.55, "measured": 1.3},
              {"label": "lookup", "alpha": 0.3, "c": 0.001, "hollow": True}]
    ax = plot_alpha_c_plane(curve, points)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["copy: measured 1.30x", "lookup"]
    assert any(t.get_text().endswith("x") for t in ax.texts)  # the contour labels
    assert ax.get_xlim()[1] == pytest.approx(0.8) and ax.get_xlim()[0] < 0
    import matplotlib.pyplot as plt

    plt.close("all")
