"""Traces written by speculative_generate, read back and explained; faults injected and named."""
import json

import pytest
import torch

import specdec_course as sc
from specdec_course.perf import clock, faults
from specdec_course.perf.trace import FINDINGS, analyse_trace, read_trace

from helpers import tiny_pair


@pytest.fixture(scope="module")
def pair():
    target, draft = tiny_pair(0, noise=0.1)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    return target, draft, ids, sc.autoregressive_generate(target, ids, 40).tokens


def traced(tmp_path, target, draft, ids, name, fault=None, **kwargs):
    path = tmp_path / f"{name}.jsonl"
    # on a simulated clock the tiny pair costs what the real pair costs, whatever this machine's speed
    with clock.simulated_costs(target, draft):
        if fault is None:
            result = sc.speculative_generate(target, draft, ids, 40, tau=3, trace=path, **kwargs)
        else:
            with faults.injected(fault, target, draft):
                result = sc.speculative_generate(target, draft, ids, 40, tau=3, trace=path, **kwargs)
    return result, path


def test_trace_is_written_and_read_back(tmp_path, pair):
    target, draft, ids, reference = pair
    result, path = traced(tmp_path, target, draft, ids, "healthy")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[-1]["kind"] == "summary"
    header, steps, summary = read_trace(path)
    assert len(steps) == result.target_passes and summary["tokens"] == len(result.tokens) == 40
    assert [s["accepted"] for s in steps] == [s.n_accepted for s in result.steps]
    assert [s["correction"] for s in steps] == [s.correction for s in result.steps]
    assert sum(len(s["emitted"]) for s in steps) == 40
    assert all(s["target_calls"] == 1 and s["target_cache"] == s["kept"] for s in steps)
    assert steps[0]["verify_tokens"] == 12 + steps[0]["tau"] and steps[1]["verify_tokens"] == steps[1]["tau"] + 1
    assert summary["alpha"] == pytest.approx(result.alpha) and summary["kept_fraction"] == pytest.approx(result.kept_fraction)
    assert {"1", "4"} <= set(header["calibration"]["target_ms"])
    diagnosis = analyse_trace(path)
    assert diagnosis.names == [], str(diagnosis)
    assert "no fault found" in str(diagnosis)


@pytest.mark.parametrize("fault", faults.FAULTS)
def test_each_injected_fault_is_named_and_only_stale_cache_changes_output(tmp_path, pair, fault):
    target, draft, ids, reference = pair
    if fault == "no_chat_template":
        result, path = traced(tmp_path, target, draft, ids, fault, draft_input_ids=ids[:, 5:])
    else:
        result, path = traced(tmp_path, target, draft, ids, fault, fault=fault)
    names = {"no_chat_template": "prompt_mismatch", "slow_draft": "slow_draft",
             "token_by_token_verification": "verification_not_one_pass", "slow_kernels": "slow_kernels",
             "stale_cache": "stale_cache"}
    diagnosis = analyse_trace(path)
    assert diagnosis.names and diagnosis.names[0] == names[fault], str(diagnosis)
    assert set(diagnosis.names) <= set(FINDINGS)
    passes = sum(s.target_calls for s in result.steps)
    if fault == "token_by_token_verification":  # the first line counts the target's real passes, not its steps
        assert passes > len(result.steps) and f"the target ran {passes} passes" in str(diagnosis), str(diagnosis)
    else:
        assert f"in {len(result.steps)} target passes" in str(diagnosis), str(diagnosis)
    check = faults.lossless_check(target, ids, result)
    assert faults.lossless_check(target, ids, result, reference=reference) == check  # a reference given: the same
    if fault == "stale_cache":
        assert not check["identical"] and check["top2_margin"] > 1e-3  # a real difference, not a near-tie
    else:
        assert check["identical"] and result.tokens == reference
    # everything is undone afterwards
    assert analyse_trace(traced(tmp_path, target, draft, ids, "after")[1]).names == []


@pytest.mark.parametrize("case", ["tau_too_large", "no_tau_pays"])
def test_a_healthy_run_slower_than_the_target_alone_is_named(tmp_path, case):
    """No fault, yet slower than the target alone: the analyser says whether a smaller τ pays (and which) or none does.
    The costs are set by a simulated clock, so the verdict holds on any machine."""
    from specdec_course.perf.trace import predicted_by_tau

    target, draft = tiny_pair(0, noise=NOISE)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    tau, extra_ms = (6, 4.0) if case == "tau_too_large" else (1, 20.0)  # T(k) = 40 + extra_ms (k − 1)
    path = tmp_path / f"{case}.jsonl"
    with clock.simulated_costs(target, draft, target_ms_per_extra_token=extra_ms):
        result = sc.speculative_generate(target, draft, ids, 40, tau=tau, trace=path)
    diagnosis = analyse_trace(path)
    n = diagnosis.numbers
    assert 0.3 <= n["alpha"] <= 0.7 and result.tokens == sc.autoregressive_generate(target, ids, 40).tokens
    assert diagnosis.names == ["slower_than_target"], str(diagnosis)
    assert n["vs_target"] < 1 and n["vs_target"] == pytest.approx(predicted_by_tau(n)[tau], rel=0.15)
    message = diagnosis.findings[0].message
    predicted = predicted_by_tau(n)
    best = max(predicted, key=predicted.get)
    if case == "tau_too_large":
        assert best < tau and predicted[best] > 1 and f"use τ = {best}" in message and message.startswith("τ too large")
    else:
        assert predicted[best] < 1 and message.startswith("no τ pays")
    assert "slower_than_target" in str(diagnosis) and "no fault found" not in str(diagnosis)


NOISE = 0.25  # a draft that agrees about 4 times in 10: healthy, but no great help


def test_bad_traces_and_faults_are_refused_clearly(tmp_path, pair):
    target, draft, ids, _ = pair
    with pytest.raises(ValueError, match="unknown fault"):
        with faults.injected("gremlins", target, draft):
            pass
    with pytest.raises(FileNotFoundError):
        read_trace(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_trace(bad)
    bad.write_text(json.dumps({"kind": "header", "prompt_length": 3}) + "\n")
    with pytest.raises(ValueError, match="no summary"):
        read_trace(bad)


def test_a_run_with_low_acceptance_still_gets_the_cost_models_verdict(tmp_path):
    """Low α is a finding, not a fault of the loop: when the run is also slower than the target alone, the analyser
    still gives the cost model's verdict (a smaller τ that pays, or none). Costs set by a simulated clock."""
    from specdec_course.perf.trace import predicted_by_tau

    target, draft = tiny_pair(0, noise=0.5)  # α about 0.2
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    path = tmp_path / "low_alpha.jsonl"
    with clock.simulated_costs(target, draft, target_ms_per_extra_token=5.0):  # T(5)/T(1) = 1.5: not "slow kernels"
        sc.speculative_generate(target, draft, ids, 40, tau=4, trace=path)
    diagnosis = analyse_trace(path)
    n = diagnosis.numbers
    assert 0.05 < n["alpha"] < 0.3 and n["vs_target"] < 1, str(diagnosis)
    assert diagnosis.names == ["low_acceptance", "slower_than_target"], str(diagnosis)
    predicted = predicted_by_tau(n)
    best = max(predicted, key=predicted.get)
    verdict = diagnosis.findings[1].message
    assert verdict.startswith("no τ pays") if predicted[best] <= 1 or best == 4 else f"use τ = {best}" in verdict
