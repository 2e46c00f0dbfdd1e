"""Exercises 06 and 07: the solutions pass the visible and the hidden checks; the usual mistakes and the cheats fail
(constants or another model's costs for the timing loop, a lookup of traces by file name or by content), and no hidden
check's message shows a hidden case's expected value. Tiny models and the simulated clock only: nothing is timed."""
import ast
import hashlib
import json
import statistics
import time
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from helpers import hidden_failure
from specdec_course.course import checks, hidden_checks, references
from specdec_course.models import tiny_llama
from specdec_course.perf import clock

ROOT = Path(__file__).resolve().parent.parent
E06, E07 = "06_performance_analysis", "07_control_and_production"


def _solution(exercise) -> dict:
    """The functions and classes the solution notebook defines, run from its own cells."""
    namespace = {"Path": Path}
    for cell in json.loads((ROOT / "solutions" / f"{exercise}.ipynb").read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        tree.body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        exec(compile(tree, exercise, "exec"), namespace)  # noqa: S102 - the course's own solution
    return namespace


S06, S07 = _solution(E06), _solution(E07)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return checks.fault_traces(tmp_path_factory.mktemp("traces"))


def _hidden(exercise, cell, fn):
    name = hidden_checks.HIDDEN[exercise][cell][0]
    hidden_checks.run(exercise, cell, {name: fn})


_hidden_failure = hidden_failure


def _shows_none_of(message: str, values) -> None:
    for value in values:
        for shown in {f"{value:g}", f"{value:.4f}", f"{value:.2f}", repr(value)}:
            assert shown not in message, (shown, message)


# --------------------------------------------------------------------------- 06
def test_the_06_solution_passes_every_visible_and_hidden_check(traces, capsys):
    s = S06
    checks.check_kept_fraction(s["kept_fraction"])
    checks.check_alpha_from_steps(s["alpha_from_steps"])
    checks.check_choose_tau(s["choose_tau"])
    measured = checks.check_measured_costs(s["measure_target_ms"], tiny_llama(3))
    assert sorted(measured) == [1, 8]
    checks.check_time_split(s["time_split"], traces["healthy"])
    checks.check_tau_under_budget(s["tau_under_budget"])
    for cell in hidden_checks.HIDDEN[E06]:
        hidden_checks.run(E06, cell, s)
    assert capsys.readouterr().out.count("✓") == 12


def test_every_graded_task_of_06_and_07_has_a_hidden_check():
    assert set(hidden_checks.HIDDEN[E06]) == {"s0604", "s0607", "s0610", "s0613", "s0617", "s0622"}
    assert set(hidden_checks.HIDDEN[E07]) == {"s0704", "s0707", "s0710", "s0713"}


def _costs_of(model, ks):
    """What the simulated clock would report for ``model`` on the visible check's first case: no timing at all."""
    return {k: 37.0 + 2.5 * (k - 1) for k in ks}


def _timing_loop(feed=lambda new, prefix: new, *, own_model=None, timer=clock.now, include_prefix=False):
    """A timing loop with one thing changed (what it feeds, which model it times, its timer, what it times)."""
    def measure(model, ks):
        model = own_model or model
        prefix = torch.randint(0, model.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
        result = {}
        with torch.no_grad():
            for k in ks:
                new = torch.randint(0, model.config.vocab_size, (1, k), generator=torch.Generator().manual_seed(k))
                times = []
                for _ in range(3):
                    cache = DynamicCache()
                    if not include_prefix:
                        model(prefix, past_key_values=cache, use_cache=True)
                    start = timer()
                    if include_prefix:
                        model(prefix, past_key_values=cache, use_cache=True)
                    model(feed(new, prefix), past_key_values=cache, use_cache=True)
                    times.append(timer() - start)
                result[k] = 1000 * statistics.median(times)
        return result
    return measure


def test_measure_target_ms_is_judged_on_the_simulated_clock_not_on_constants():
    model = tiny_llama(3)
    hidden_values = [a + b * (k - 1) for (a, b), ks in (((5.5, 0.125), [1, 3, 6]), ((80.0, 9.0), [2, 9]),
                                                          ((0.75, 0.0), [4, 1, 2])) for k in ks]
    checks.check_measured_costs(_timing_loop(), model)  # the loop as the task states it
    _hidden(E06, "s0613", _timing_loop())
    constants = {1: 38.2, 2: 39.0, 4: 44.1, 8: 55.3, 3: 41.0, 5: 47.2, 6: 50.1, 9: 58.0}
    for cheat in (lambda model, ks: {k: constants[k] for k in ks}, _costs_of,
                  _timing_loop(own_model=tiny_llama(9, hidden_size=64)),                  # another model's passes
                  _timing_loop(feed=lambda new, prefix: torch.cat([prefix[:, -1:], new], 1)),  # k + 1 tokens
                  _timing_loop(timer=time.perf_counter)):                                  # the wall clock
        with pytest.raises(checks.CheckFailed):
            checks.check_measured_costs(cheat, model)
        _shows_none_of(_hidden_failure(E06, "s0613", cheat), hidden_values)
    with pytest.raises(checks.CheckFailed, match="k \\+ 1 tokens"):
        checks.check_measured_costs(_timing_loop(feed=lambda new, prefix: torch.cat([prefix[:, -1:], new], 1)), model)
    with pytest.raises(checks.CheckFailed, match="prefix is in it"):
        checks.check_measured_costs(_timing_loop(include_prefix=True), model)
    assert "k + 1 tokens" in _hidden_failure(
        E06, "s0613", _timing_loop(feed=lambda new, prefix: torch.cat([prefix[:, -1:], new], 1)))
    assert "clock.now()" in _hidden_failure(E06, "s0613", _timing_loop(own_model=tiny_llama(9)))


def test_tau_under_budget_cases_expect_every_kind_of_answer_and_name_the_mistakes():
    answers = {checks._budget_choice(references.budget_options(checks.BUDGET_CURVES[c], d, a, b, 12))
               for c, d, a, b in checks.BUDGET_CASES}
    assert None in answers and 0 in answers and len(answers - {None, 0}) >= 3, answers
    solution = S06["tau_under_budget"]

    def no_target_alone(target_ms, d, alpha, budget, max_tau):
        got = solution(target_ms, d, alpha, budget, max_tau)
        return got if got != 0 else None

    def best_fitting_drafts(target_ms, d, alpha, budget, max_tau):
        options = references.budget_options(target_ms, d, alpha, budget, max_tau)
        options.pop(0, None)
        return max(sorted(options), key=options.get) if options else (0 if target_ms[1] <= budget else None)

    def per_step(target_ms, d, alpha, budget, max_tau):  # T(τ+1) held against the budget, not T(τ+1)/E
        tokens = {t: t + 1 if alpha == 1 else (1 - alpha ** (t + 1)) / (1 - alpha) for t in range(1, max_tau + 1)}
        speeds = {t: tokens[t] * target_ms[1] / (t * d + target_ms[t + 1]) for t in tokens if target_ms[t + 1] <= budget}
        if target_ms[1] <= budget:
            speeds[0] = 1.0
        return max(sorted(speeds), key=speeds.get) if speeds else None

    with pytest.raises(checks.CheckFailed, match="target alone"):
        checks.check_tau_under_budget(best_fitting_drafts)
    with pytest.raises(checks.CheckFailed, match="per generated token"):
        checks.check_tau_under_budget(per_step)
    for wrong in (no_target_alone, best_fitting_drafts, per_step, lambda *args: 1):
        with pytest.raises(checks.CheckFailed, match="cases wrong"):
            checks.check_tau_under_budget(wrong)
        _hidden_failure(E06, "s0622", wrong)
    assert "target alone" in _hidden_failure(E06, "s0622", best_fitting_drafts)


def test_06_hidden_checks_name_the_mistake_without_the_answer(traces):
    from specdec_course.perf.trace import analyse_trace

    kept = [a * (1 - a ** t) / ((1 - a) * t) for a in (0.1, 0.65, 0.999) for t in (2, 5, 12)]
    _shows_none_of(_hidden_failure(E06, "s0604", lambda alpha, tau: alpha), kept)
    message = _hidden_failure(E06, "s0607", lambda steps: sum(n for _, n in steps) / sum(t for t, _ in steps))
    assert "kept fraction" in message
    _shows_none_of(message, [7 / 9])
    assert "fastest" in _hidden_failure(E06, "s0610", lambda target_ms, d, alpha, max_tau: max_tau)

    def percent(path):
        return tuple(100 * x for x in S06["time_split"](path))

    message = _hidden_failure(E06, "s0617", percent)
    assert "percentage" in message
    assert "hidden" in message
    # the hidden trace is another run's: a function that answers the visible trace's numbers fails
    visible = S06["time_split"](traces["healthy"])
    assert "wrong" in _hidden_failure(E06, "s0617", lambda path: visible)
    numbers = analyse_trace(traces["healthy"]).numbers
    assert visible == pytest.approx((numbers["draft_share"], numbers["verify_share"]))


# --------------------------------------------------------------------------- 07
def test_the_07_solution_passes_every_visible_and_hidden_check(traces, capsys):
    s = S07
    checks.check_grow_shrink(s["GrowShrinkPolicy"])
    checks.check_token_gaps(s["token_gaps"])
    checks.check_capped_tau(s["capped_tau"])
    checks.check_diagnose(s["diagnose"], traces)
    for cell in hidden_checks.HIDDEN[E07]:
        hidden_checks.run(E07, cell, s)
    assert capsys.readouterr().out.count("✓") == 8


def test_the_trace_names_are_shuffled_and_tell_nothing(tmp_path, traces):
    first = checks.fault_traces(tmp_path / "a", seed=1)
    second = checks.fault_traces(tmp_path / "b", seed=2)
    assert [p.name for p in first.values()] != [p.name for p in second.values()]
    for fault, path in traces.items():  # the same runs, whatever their names
        assert path.read_text() == first[fault].read_text() == second[fault].read_text()
        assert fault not in path.name


def test_a_lookup_of_the_visible_traces_fails_the_hidden_check(traces):
    by_name = {path.name: checks.DIAGNOSES[fault] for fault, path in traces.items()}
    by_content = {hashlib.sha256(path.read_bytes()).hexdigest(): checks.DIAGNOSES[fault] for fault, path in traces.items()}

    def name_lookup(path):
        return by_name.get(Path(path).name, "none")

    def content_lookup(path):
        return by_content.get(hashlib.sha256(Path(path).read_bytes()).hexdigest(), "none")

    checks.check_diagnose(name_lookup, traces)      # both pass on the traces they were made from ...
    checks.check_diagnose(content_lookup, traces)
    for lookup in (name_lookup, content_lookup):   # ... not on another run's
        message = _hidden_failure(E07, "s0713", lookup)
        assert "diagnosed wrong" in message
        assert not any(repr(label) in message for label in checks.DIAGNOSES.values()), message


def test_diagnose_messages_point_at_evidence_not_at_the_label(traces):
    with pytest.raises(checks.CheckFailed) as failed:
        checks.check_diagnose(lambda path: "none", traces)
    message = str(failed.value)
    assert "5 of 6 cases wrong" in message and "every rule to pass" in message
    for label in set(checks.DIAGNOSES.values()) - {"none"}:
        assert repr(label) not in message, message


def test_07_hidden_checks_name_the_mistake_without_the_answer():
    class NoCap:
        def __init__(self, start):
            self.tau, self.max_tau = start, 16

        def next_tau(self):
            return self.tau

        def update(self, step):
            self.tau = self.tau + 2 if step.n_accepted == step.tau else max(1, self.tau - 1)

    assert "never above max_tau" in _hidden_failure(E07, "s0704", NoCap)
    assert "gap" in _hidden_failure(E07, "s0707", lambda steps: [ms for ms, n in steps[1:]])
    assert "wrong" in _hidden_failure(E07, "s0710", lambda target_ms, d, alpha, bound, max_tau: 1)
    assert "return 0, the target alone" in _hidden_failure(E07, "s0710", lambda target_ms, d, alpha, bound, max_tau: max(
        references.capped_options(target_ms, d, alpha, bound, max_tau) or {1: 0}))


def test_untouched_06_07_functions_are_not_attempted():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for check in (checks.check_tau_under_budget, lambda fn: checks.check_measured_costs(fn, tiny_llama(3))):
        with pytest.raises(checks.NotAttempted):
            check(stub)
    for exercise, cell in [(E06, c) for c in hidden_checks.HIDDEN[E06]] + [(E07, c) for c in hidden_checks.HIDDEN[E07]]:
        with pytest.raises(checks.NotAttempted):
            _hidden(exercise, cell, stub)
