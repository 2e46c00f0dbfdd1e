"""Latency as a streaming user sees it: when each token arrives.

Target-only decoding delivers one token per pass, evenly spaced. Speculative decoding delivers the n + 1 tokens of a
step together when the step ends: a burst, then a wait of one whole step. So for the same throughput the gaps between
tokens are more uneven, and a product that promises a smooth stream (a tail bound on the gap) must watch τ.
    time to first token (TTFT): from the start to the end of the first step (it also reads the prompt)
    gaps: time between consecutive tokens (0 inside a step's burst)
    time per output token (TPOT): (total − TTFT) / (tokens − 1)
"""
from __future__ import annotations


def arrival_times(result) -> list[float]:
    """Seconds from the start at which each token of ``result`` became available: a ``SpecResult`` (all tokens of a
    step arrive at its end; draft + verify time, the loop's bookkeeping left out) or a ``GenerationResult``."""
    times, clock = [], 0.0
    if hasattr(result, "steps"):
        for step in result.steps:
            clock += step.draft_time + step.verify_time
            times += [clock] * len(step.emitted)
    else:
        for seconds in result.token_times:
            clock += seconds
            times.append(clock)
    return times[: len(result.tokens)]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(result) -> dict:
    """TTFT, TPOT, median and 95th-percentile gap between tokens, and tokens/s, in milliseconds where timed."""
    times = arrival_times(result)
    if not times:
        raise ValueError("the result has no tokens")
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"ttft_ms": 1000 * times[0], "tpot_ms": 1000 * (times[-1] - times[0]) / max(len(times) - 1, 1),
            "gap_p50_ms": 1000 * percentile(gaps, 50), "gap_p95_ms": 1000 * percentile(gaps, 95),
            "gap_max_ms": 1000 * max(gaps, default=0.0), "tokens_per_s": len(times) / times[-1]}
