"""The simulated clock (costs set by the test, not by the machine) and SPECDEC_TEST_SLOWDOWN (a slower machine)."""
import time
from types import SimpleNamespace

import pytest
import torch

import specdec_course as sc
from specdec_course.course import checks
from specdec_course.perf import clock
from specdec_course.perf.trace import analyse_trace

from helpers import tiny_pair


def test_the_simulated_clock_moves_only_by_what_is_spent():
    with clock.simulated():
        assert clock.is_simulated() and clock.now() == 0.0
        sum(range(100_000))  # work costs nothing on it
        assert clock.now() == 0.0
        clock.spend(2.5)
        assert clock.now() == pytest.approx(0.0025)
        with clock.simulated():  # a nested simulation starts at 0 and gives the outer one back its time
            clock.spend(1)
            assert clock.now() == pytest.approx(0.001)
        assert clock.now() == pytest.approx(0.0025)
    assert not clock.is_simulated()
    start = time.perf_counter()
    clock.spend(5)  # on the wall clock: a busy wait at least that long
    assert time.perf_counter() - start >= 0.005


def test_added_cost_charges_each_pass_by_its_tokens_and_is_removed_after():
    target, draft = tiny_pair(0)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))
    hooks_before = (dict(target._forward_pre_hooks), dict(draft._forward_pre_hooks))  # SPECDEC_TEST_SLOWDOWN adds one
    with clock.simulated_costs(target, draft):
        assert 1000 * sc.forward_time(target, 16, 1) == pytest.approx(40.0)
        assert 1000 * sc.forward_time(target, 16, 4) == pytest.approx(52.0)  # 40 + 4 × 3
        assert 1000 * sc.forward_time(draft, 16, 4) == pytest.approx(3.0)
        start = clock.now()
        with torch.no_grad():
            target(ids)
        assert 1000 * (clock.now() - start) == pytest.approx(40 + 4 * 8)
    assert (dict(target._forward_pre_hooks), dict(draft._forward_pre_hooks)) == hooks_before  # its own hooks are gone
    with pytest.raises(ValueError, match="ms_per_pass must be a number of milliseconds ≥ 0"):
        with clock.added_cost(target, ms_per_pass=-1):
            pass


def test_a_speculative_run_on_the_simulated_clock_costs_what_the_model_says():
    target, draft = tiny_pair(1, noise=0.1)
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))
    with clock.simulated_costs(target, draft):
        result = sc.speculative_generate(target, draft, ids, 24, tau=3)
    for i, s in enumerate(result.steps):
        assert 1000 * s.draft_time == pytest.approx(3.0 * s.tau)
        assert 1000 * s.verify_time == pytest.approx(40 + 4 * (s.verify_tokens - 1)), i
    assert result.total_time == pytest.approx(result.draft_time + result.verify_time)


def test_slowdown_makes_every_pass_of_a_tiny_model_n_times_as_long_on_the_wall_clock_only(monkeypatch):
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(2))
    ticks, waits = iter(range(1_000_000)), []
    # the hooks read the clock module's wall clock: here one that moves 1 s per reading, so each pass "takes" 1 s
    monkeypatch.setattr(clock, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    monkeypatch.setattr(clock, "_busy_wait", waits.append)
    monkeypatch.delenv(clock.SLOWDOWN_VARIABLE, raising=False)
    plain = sc.models.noisy_copy(sc.tiny_llama(0), 0.1)
    monkeypatch.setenv(clock.SLOWDOWN_VARIABLE, "3")
    slowed = sc.models.noisy_copy(sc.tiny_llama(0), 0.1)  # a draft copied from a slowed model is slowed too, once
    with torch.no_grad():
        plain(ids)
        assert waits == []
        slowed(ids)
        assert waits == [2.0]  # it waits twice what the pass took: three times as long in all
        with clock.simulated():  # and the simulated clock does not see it
            slowed(ids)
            assert clock.now() == 0.0 and waits == [2.0, 2.0]
    assert clock.slow_down_as_asked(slowed) is slowed and len(slowed._forward_hooks) == 1  # never twice


@pytest.mark.parametrize("value", ["fast", "0.5", "-2", "inf", "nan"])
def test_a_bad_slowdown_is_refused_clearly(monkeypatch, value):
    monkeypatch.setenv(clock.SLOWDOWN_VARIABLE, value)
    with pytest.raises(ValueError, match="SPECDEC_TEST_SLOWDOWN=.*a number ≥ 1"):
        sc.tiny_llama(0)


def test_traces_and_verdicts_are_the_same_on_a_machine_three_times_slower(monkeypatch, tmp_path):
    # the exercise-07 traces: a healthy run and one per fault, timed on the simulated clock
    monkeypatch.delenv(clock.SLOWDOWN_VARIABLE, raising=False)
    here = checks.fault_traces(tmp_path / "here")
    monkeypatch.setenv(clock.SLOWDOWN_VARIABLE, "3")
    slower = checks.fault_traces(tmp_path / "slower")
    for name, path in here.items():
        assert path.read_text() == slower[name].read_text(), f"{name}: the trace depends on the machine's speed"
    assert analyse_trace(slower["healthy"]).names == [], str(analyse_trace(slower["healthy"]))
    checks.check_diagnose(lambda path: (analyse_trace(path).names or ["none"])[0], slower)
