"""Exercise 09's checks (visible and hidden) accept right answers, name the usual mistakes, and the α-c plane helpers
agree with the cost model. Tiny models and hand-made numbers only."""
import pytest
import torch

from specdec_course.course import checks, hidden_checks, references
from specdec_course.draft import Draft
from specdec_course.drafters import Drafter, find_continuation as reference_continuation


def find_continuation(tokens, tau, max_ngram=3):
    return reference_continuation(tokens, tau, max_ngram=max_ngram)


def drafter_speedup(alpha, c, tau, cost_curve):
    tokens = tau + 1 if alpha == 1 else (1 - alpha ** (tau + 1)) / (1 - alpha)
    return tokens / (tau * c + cost_curve[tau + 1])


def best_tau(alpha, c, cost_curve, max_tau):
    return max(range(1, max_tau + 1), key=lambda tau: drafter_speedup(alpha, c, tau, cost_curve))


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
    checks.check_drafter_speedup(drafter_speedup, best_tau)
    checks.check_choose_drafter(choose_drafter)
    checks.check_own_drafter(ContextBigramDrafter)
    namespace = {"find_continuation": find_continuation, "drafter_speedup": drafter_speedup,
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

    for check, args in ((checks.check_find_continuation, (stub,)), (checks.check_drafter_speedup, (stub, stub)),
                        (checks.check_drafter_speedup, (drafter_speedup, stub)), (checks.check_choose_drafter, (stub,)),
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
    with pytest.raises(checks.CheckFailed):
        hidden_checks.find_continuation(oldest)


def test_the_usual_speedup_and_choice_mistakes_are_named():
    def verifies_tau_tokens(alpha, c, tau, curve):
        return drafter_speedup(alpha, c, tau, {k + 1: v for k, v in curve.items()})

    def free_verification(alpha, c, tau, curve):
        return drafter_speedup(alpha, c, tau, {k: 1.0 for k in curve})

    with pytest.raises(checks.CheckFailed, match=r"T\(τ \+ 1\), not T\(τ\)"):
        checks.check_drafter_speedup(verifies_tau_tokens, best_tau)
    with pytest.raises(checks.CheckFailed, match="which is 1 only on a flat curve"):
        checks.check_drafter_speedup(free_verification, best_tau)
    with pytest.raises(checks.CheckFailed, match="expected τ ="):
        checks.check_drafter_speedup(drafter_speedup, lambda alpha, c, curve, max_tau: max_tau)
    with pytest.raises(checks.CheckFailed, match="MB; the budget is"):
        checks.check_choose_drafter(lambda *a, **k: choose_drafter(*a, **k, ignore_memory=True))
    with pytest.raises(checks.CheckFailed, match="> max_step"):
        checks.check_choose_drafter(lambda *a, **k: choose_drafter(*a, **k, ignore_step=True))
    with pytest.raises(checks.CheckFailed):
        hidden_checks.choose_drafter(lambda *a, **k: choose_drafter(*a, **k, ignore_memory=True))
    with pytest.raises(checks.CheckFailed):
        hidden_checks.drafter_speedup(free_verification)


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

    with pytest.raises(checks.CheckFailed, match="probability distribution"):
        checks.check_own_drafter(ZeroQ)
    with pytest.raises(checks.CheckFailed, match="at most τ"):
        checks.check_own_drafter(TooMany)
    with pytest.raises(checks.CheckFailed, match="never proposed a token"):
        checks.check_own_drafter(NothingEver)


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
