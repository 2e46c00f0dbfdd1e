"""Traces: a speculative run written as JSON lines, read back, and explained.

``speculative_generate(..., trace="run.jsonl")`` writes
  line 1   {"kind": "header", ...}  the setup: rule, τ policy, cache kind, kernel paths, prompt lengths, and a short
           calibration taken after the run: T(1) and T(k) of the target (ms), d of the draft (ms)
  then     {"kind": "step", ...}    one per step: tau, accepted, correction, emitted, draft_ms, verify_ms,
           verify_tokens, target_calls, kept, target_cache, draft_cache
  last     {"kind": "summary", ...} tokens, target passes, total_ms, alpha, kept_fraction
``analyse_trace`` reads one back and says where the time went and what limits the speedup.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from .cost_model import alpha_from_steps, kept_fraction_of_steps

# what the analyser calls a problem (see ``analyse_trace``)
SLOW_DRAFT_C = 0.25          # a draft token costing more than this fraction of a one-token target pass
STEEP_VERIFY = 1.6           # T(τ+1) / T(1) above this: verification is far from free
LOW_ALPHA = 0.3              # fewer than this fraction of looked-at drafts accepted

FINDINGS = {
    "stale_cache": "a cache kept tokens that were rejected",
    "verification_not_one_pass": "verification ran as several target passes per step",
    "prompt_mismatch": "the draft was given a different prompt from the target",
    "slow_kernels": "a pass over τ + 1 tokens costs much more than a one-token pass",
    "slow_draft": "drafting costs too much next to verification",
    "low_acceptance": "the draft rarely agrees with the target",
    "slower_than_target": "a run with no broken part, slower than the target alone: τ too large, or no τ pays",
}


BROKEN = {"stale_cache", "verification_not_one_pass", "prompt_mismatch"}  # faults of the loop, not of the costs


class count_calls:
    """Count the forward passes of ``model`` (a hook on the model itself: a draft may share its embedding module)."""

    def __init__(self, model):
        self.count = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


def calibrate(target, draft, k: int, *, repeats: int = 3) -> dict:
    """T(1) and T(k) of the target and d of the draft, in ms, on their current kernel paths (cached passes)."""
    from .kernels import current_pass_times

    def times(model, ks):
        return {k: 1000 * s for k, s in current_pass_times(model, ks, prefix_length=32, repeats=repeats).items()}

    from ..drafters.base import as_drafter

    target_ms = times(target, sorted({1, k}))
    model = as_drafter(draft).cost_model  # a drafter without a model of its own (prompt lookup) costs no passes
    return {"target_ms": {str(x): v for x, v in target_ms.items()}, "draft_ms": times(model, [1])[1] if model is not None else 0.0}


def write_trace(path, result, *, target, draft, rule, policy, cache_kind, draft_prompt_length, max_new_tokens,
                calibration: bool = True) -> None:
    """Write ``result`` (a ``SpecResult``) to ``path`` as JSON lines."""
    from ..drafters.base import as_drafter
    from .kernels import kernel_path

    drafter = as_drafter(draft)
    draft_model = drafter.cost_model
    max_tau = max((s.tau for s in result.steps), default=1)
    header = {"kind": "header", "rule": rule, "policy": repr(policy), "cache_kind": cache_kind,
              "prompt_length": result.prompt_length, "draft_prompt_length": draft_prompt_length,
              "max_new_tokens": max_new_tokens, "target_kernels": kernel_path(target),
              "draft_kernels": kernel_path(draft_model) if draft_model is not None else None,
              "device": str(next(target.parameters()).device) if hasattr(target, "parameters") else "cpu"}
    if calibration and hasattr(target, "get_input_embeddings"):
        header["calibration"] = calibrate(target, draft, max_tau + 1)
    header["drafter"] = drafter.name
    lines = [header]
    for index, s in enumerate(result.steps):
        lines.append({"kind": "step", "step": index, "tau": s.tau, "accepted": s.n_accepted, "correction": s.correction,
                      "emitted": s.emitted, "draft_ms": 1000 * s.draft_time, "verify_ms": 1000 * s.verify_time,
                      "verify_tokens": s.verify_tokens, "target_calls": s.target_calls, "kept": s.kept,
                      "target_cache": s.target_cache, "draft_cache": s.draft_cache})
    lines.append({"kind": "summary", "tokens": len(result.tokens), "target_passes": result.target_passes,
                  "total_ms": 1000 * result.total_time, "alpha": result.alpha, "kept_fraction": result.kept_fraction})
    Path(path).write_text("".join(json.dumps(line) + "\n" for line in lines))


def read_trace(path) -> tuple[dict, list[dict], dict]:
    """(header, steps, summary) of a trace file; a clear error for a file that is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace {path} does not exist")
    header, steps, summary = None, [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}, line {number}: not JSON ({err}); a trace has one JSON object per line") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "header":
            header = record
        elif kind == "step":
            steps.append(record)
        elif kind == "summary":
            summary = record
        else:
            raise ValueError(f"{path}, line {number}: kind {kind!r}; a trace line is a header, a step or a summary")
    if header is None or summary is None:
        raise ValueError(f"{path} has no {'header' if header is None else 'summary'} line: was the run cut short?")
    return header, steps, summary


@dataclass
class Finding:
    name: str        # one of FINDINGS
    message: str     # what was seen and what to do about it, in words a learner can act on


@dataclass
class Diagnosis:
    numbers: dict
    findings: list[Finding] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.findings]

    def __str__(self) -> str:
        return format_diagnosis(self)


def analyse_trace(trace) -> Diagnosis:
    """Where the time of a traced run went, and what limits its speedup, most serious first.

    ``trace``: a path, or (header, steps, summary) as ``read_trace`` returns them. Checks, in order:
    caches that hold rejected tokens (the output may be wrong: run the lossless check), verification split into
    several passes, a draft prompt that differs from the target's, the cost of a (τ+1)-token pass (kernel path),
    the cost of drafting, and the acceptance probability α.
    """
    header, steps, summary = read_trace(trace) if isinstance(trace, (str, Path)) else trace
    if not steps:
        raise ValueError("the trace has no steps to analyse")
    later = steps[1:] or steps  # the first step also reads the prompt
    total = summary["total_ms"]
    draft_ms, verify_ms = sum(s["draft_ms"] for s in steps), sum(s["verify_ms"] for s in steps)
    counts = [SimpleNamespace(tau=s["tau"], n_accepted=s["accepted"]) for s in steps]
    mean_tau = statistics.mean(s["tau"] for s in later)
    numbers = {"tokens": summary["tokens"], "target_passes": summary["target_passes"],
               "target_calls": sum(s.get("target_calls", 1) for s in steps),
               "tokens_per_pass": summary["tokens"] / max(summary["target_passes"], 1),
               "alpha": alpha_from_steps(counts), "kept_fraction": kept_fraction_of_steps(counts),
               "mean_tau": mean_tau, "common_tau": statistics.mode(s["tau"] for s in later), "total_ms": total,
               "draft_share": draft_ms / total, "verify_share": verify_ms / total,
               "other_share": max(0.0, 1 - (draft_ms + verify_ms) / total),
               "draft_ms_per_token": statistics.median(s["draft_ms"] / s["tau"] for s in later if s["tau"]) if any(s["tau"] for s in later) else float("nan"),
               "verify_ms_per_step": statistics.median(s["verify_ms"] for s in later)}
    calibration = header.get("calibration")
    if calibration:
        t = {int(k): v for k, v in calibration["target_ms"].items()}
        k = max(t)
        numbers.update({"target_ms_1": t[1], "target_ms_k": t[k], "calibration_k": k, "verify_ratio": t[k] / t[1],
                        "c": calibration["draft_ms"] / t[1]})
        first = steps[0]
        steady_ms = total - first["draft_ms"] - first["verify_ms"]  # the first step also reads the prompt
        steady_tokens = summary["tokens"] - len(first["emitted"])
        if steady_tokens > 0 and steady_ms > 0:
            numbers["ms_per_token"] = steady_ms / steady_tokens
            numbers["vs_target"] = t[1] / numbers["ms_per_token"]  # against the target alone at T(1) per token
    findings = []

    stale = [s for s in steps if s.get("target_cache") is not None and s["target_cache"] != s["kept"]]
    stale += [s for s in steps if s.get("draft_cache") is not None
              and s["draft_cache"] > s["kept"] + header.get("draft_prompt_length", header["prompt_length"]) - header["prompt_length"]]
    if stale:
        s = stale[0]
        findings.append(Finding("stale_cache", (
            f"after step {s['step']} a cache held {s['target_cache'] if s['target_cache'] != s['kept'] else s['draft_cache']} "
            f"tokens where only {s['kept']} were kept ({len(stale)} such steps): rejected drafts were not rolled back, so the "
            "target reads tokens that are not in the text. This run can be fast and wrong: compare its output with the "
            "target's own greedy output (the lossless check), and roll both caches back to the kept length after every step.")))
    calls = [s["target_calls"] for s in later if s.get("target_calls") is not None]
    if calls and statistics.median(calls) > 1:
        findings.append(Finding("verification_not_one_pass", (
            f"the target ran {statistics.median(calls):g} forward passes per step (median) for τ ≈ {mean_tau:.1f} drafts: "
            "verification was done token by token. Score all τ drafts and the bonus position in one pass over τ + 1 "
            "tokens; that single pass is what makes speculative decoding pay.")))
    if header.get("draft_prompt_length", header["prompt_length"]) != header["prompt_length"]:
        findings.append(Finding("prompt_mismatch", (
            f"the draft read a {header['draft_prompt_length']}-token prompt, the target a {header['prompt_length']}-token one, "
            f"and α ≈ {numbers['alpha']:.2f}: the draft was not given the same prompt (for a chat model: the same chat "
            "template). Build both prompts with the same template; a draft predicts the target well only from the same text.")))
    if calibration and numbers["verify_ratio"] > STEEP_VERIFY:
        findings.append(Finding("slow_kernels", (
            f"one target pass over {numbers['calibration_k']} tokens costs {numbers['verify_ratio']:.2f}x a one-token pass "
            f"on kernel path {header['target_kernels']!r}: verification is far from free, so every step pays for its "
            "drafts in target time. Measure the kernel paths (notebook 00, `choose_kernels(target, 'auto')`) or use a smaller τ.")))
    c = numbers.get("c", numbers["draft_ms_per_token"] / numbers["verify_ms_per_step"])
    if c > SLOW_DRAFT_C:
        findings.append(Finding("slow_draft", (
            f"a draft token costs c = {c:.2f} of a one-token target pass and drafting took {100 * numbers['draft_share']:.0f}% "
            "of the time: the draft is too slow to pay for itself (c of 0.05-0.1 is typical). Use a smaller or cheaper "
            "draft (fewer layers, a reduced output vocabulary), or a smaller τ.")))
    if numbers["alpha"] < LOW_ALPHA and "prompt_mismatch" not in [f.name for f in findings]:
        findings.append(Finding("low_acceptance", (
            f"α ≈ {numbers['alpha']:.2f}: most drafts are rejected ({numbers['tokens_per_pass']:.2f} tokens per target pass). "
            "Check that the draft sees the same text as the target, and whether these prompts are unlike the draft's "
            "training data; with α this low only τ = 1 or 2 can pay, and only where verification is nearly free.")))
    # a run that is slower than the target alone gets the cost model's verdict (a smaller τ that pays, or none) unless
    # something is broken: low α, a dear draft or steep kernels are what the verdict weighs, not reasons to leave it out
    if not set(f.name for f in findings) & BROKEN and numbers.get("vs_target", 1.0) < 1.0 and "c" in numbers:
        findings.append(_slower_than_target(numbers))
    return Diagnosis(numbers, findings)


def predicted_by_tau(numbers: dict) -> dict[int, float]:
    """The cost model's speedup E(α, τ) / (τ·c + T(τ+1)/T(1)) for τ = 1 … k − 1, with T(j) between the calibrated
    T(1) and T(k) taken on the straight line between them (the trace measured only those two)."""
    k, ratio_k, alpha, c = numbers["calibration_k"], numbers["verify_ratio"], numbers["alpha"], numbers["c"]
    from .cost_model import expected_tokens_per_step

    ratio = lambda j: 1 + (ratio_k - 1) * (j - 1) / max(k - 1, 1)  # noqa: E731
    return {tau: expected_tokens_per_step(min(alpha, 1.0), tau) / (tau * c + ratio(tau + 1)) for tau in range(1, max(k, 2))}


def _slower_than_target(numbers: dict) -> Finding:
    """Name why a run with no fault is slower than the target alone: its τ is too large, or no τ pays."""
    predicted = predicted_by_tau(numbers)
    tau = min(max(numbers["common_tau"], 1), max(predicted))
    best = max(predicted, key=predicted.get)
    seen = (f"{numbers['ms_per_token']:.1f} ms per token against the target alone's T(1) = {numbers['target_ms_1']:.1f} ms "
            f"(≈ {numbers['vs_target']:.2f}x), with α ≈ {numbers['alpha']:.2f}, c = {numbers['c']:.3f} and "
            f"T({numbers['calibration_k']})/T(1) = {numbers['verify_ratio']:.2f}")
    if predicted[best] > 1.0 and best != tau:
        return Finding("slower_than_target", (
            f"τ too large: predicted {predicted[tau]:.2f}x at τ = {tau}, {predicted[best]:.2f}x at τ = {best}; use "
            f"τ = {best}. Nothing is broken: {seen}. The t-th draft of a step is kept only with probability α^t, "
            "yet every draft costs c and lengthens the verification pass."))
    return Finding("slower_than_target", (
        f"no τ pays here: the best prediction is {predicted[best]:.2f}x (τ = {best}). Nothing is broken: {seen}. "
        "Decode with the target alone, or find a draft with a higher α or a lower c (notebooks 08-09)."))


def format_diagnosis(diagnosis: Diagnosis) -> str:
    n = diagnosis.numbers
    steps = (f"{n['target_passes']} target passes ({n['tokens_per_pass']:.2f} per pass)"
             if n.get("target_calls", n["target_passes"]) <= n["target_passes"] else  # a step that verified in several
             f"{n['target_passes']} steps ({n['tokens_per_pass']:.2f} per step; the target ran {n['target_calls']} passes)")
    lines = [f"{n['tokens']} tokens in {steps}, "
             f"α ≈ {n['alpha']:.2f}, kept fraction κ = {n['kept_fraction']:.2f}, mean τ {n['mean_tau']:.1f}",
             f"time: drafting {100 * n['draft_share']:.0f}%, verification {100 * n['verify_share']:.0f}%, "
             f"everything else {100 * n['other_share']:.0f}% of {n['total_ms']:.0f} ms"]
    if "verify_ratio" in n:
        lines.append(f"costs: T(1) = {n['target_ms_1']:.1f} ms, T({n['calibration_k']})/T(1) = {n['verify_ratio']:.2f}, "
                     f"c = {n['c']:.3f}")
    if "vs_target" in n:
        lines.append(f"pace: {n['ms_per_token']:.1f} ms per token after the first step, ≈ {n['vs_target']:.2f}x the "
                     "target alone at T(1) per token")
    if diagnosis.findings:
        lines += [f"- {f.name}: {f.message}" for f in diagnosis.findings]
    else:
        lines.append("- no fault found: the speedup is what α and the costs above allow (see the cost model)")
    return "\n".join(lines)
