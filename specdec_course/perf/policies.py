"""Choosing τ step by step: fixed, the grow/shrink heuristic, and a policy that uses the cost model.

A policy answers one question before every step, ``next_tau()``, and learns from what the step did,
``update(step)`` (a ``StepTrace``: τ, accepted count, draft and verify times, tokens the target read).
Any object with these two methods (and ``max_tau``, the largest τ it may ask for) can drive
``speculative_generate(tau=policy)``. τ changes only how many drafts are proposed, never which token is
kept, so every policy gives output identical to the target's greedy decoding. ``next_tau()`` may return 0: that step
runs the target alone (no draft, one token), e.g. when a latency bound leaves no room for any draft.
"""
from __future__ import annotations

import statistics
from collections import deque

from .cost_model import expected_tokens_per_step


def check_tau(tau) -> int:
    """``tau`` itself when it is a whole number ≥ 1 (draft tokens per step); else a clear TypeError or ValueError."""
    if isinstance(tau, bool) or not isinstance(tau, int):
        raise TypeError(f"tau (draft tokens per step) must be a whole number, got {tau!r}")
    if tau < 1:
        raise ValueError(f"tau (draft tokens per step) must be at least 1, got {tau}")
    return tau


class FixedTau:
    """τ drafts every step."""

    def __init__(self, tau: int):
        self.tau = self.max_tau = check_tau(tau)

    def next_tau(self) -> int:
        return self.tau

    def update(self, step) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedTau({self.tau})"


class GrowShrink:
    """transformers' "heuristic" schedule for ``num_assistant_tokens``: after a step whose drafts were all accepted,
    propose ``grow`` more next time; after a rejection, ``shrink`` fewer (never below 1, never above ``max_tau``)."""

    def __init__(self, start: int = 5, *, grow: int = 2, shrink: int = 1, max_tau: int = 16):
        for name, value in (("start", start), ("grow", grow), ("shrink", shrink), ("max_tau", max_tau)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name in ("grow", "shrink") else 1):
                raise ValueError(f"GrowShrink {name} must be a whole number (at least {0 if name in ('grow', 'shrink') else 1}), got {value!r}")
        if start > max_tau:
            raise ValueError(f"GrowShrink start ({start}) must not exceed max_tau ({max_tau})")
        self.tau, self.grow, self.shrink, self.max_tau = start, grow, shrink, max_tau

    def next_tau(self) -> int:
        return self.tau

    def update(self, step) -> None:
        if step.tau == 0:
            return
        if step.n_accepted == step.tau:
            self.tau = min(self.max_tau, self.tau + self.grow)
        else:
            self.tau = max(1, self.tau - self.shrink)

    def __repr__(self) -> str:
        return f"GrowShrink(tau={self.tau}, +{self.grow}/-{self.shrink}, max {self.max_tau})"


class CostModelPolicy:
    """Pick the τ that maximises predicted throughput E(α̂, τ) / (τ·d + T(τ+1)), learning everything online.

    α̂: accepted / examined drafts with a Beta(1, 1) prior, older steps weighted down by ``memory`` per step.
    Drafting time per step D(τ) and verification time T(k): the medians of recent steps with that τ (that k tokens fed
    to the target); between and beyond the values seen so far, a straight line through them (before two different
    values have been seen, a slope of ``slope`` times the one seen, per token). Give ``costs`` (a ``cost_model.Costs``)
    to use measured costs instead. The first step, which also reads the prompt, teaches only α̂.
    """

    def __init__(self, costs=None, *, start: int = 2, max_tau: int = 12, memory: float = 0.95, slope: float = 0.05,
                 window: int = 32):
        if not 1 <= start <= max_tau:
            raise ValueError(f"start must be between 1 and max_tau ({max_tau}), got {start}")
        if not 0 < memory <= 1:
            raise ValueError(f"memory must be in (0, 1], got {memory}")
        self.costs, self.tau, self.max_tau, self.memory, self.slope = costs, start, max_tau, memory, slope
        self.accepted = self.examined = 0.0
        self.draft_ms: dict[int, deque] = {}
        self.verify_ms: dict[int, deque] = {}
        self.window, self.steps = window, 0

    @property
    def alpha(self) -> float:
        return (self.accepted + 1) / (self.examined + 2)

    def update(self, step) -> None:
        self.steps += 1
        if step.tau == 0:
            return
        self.accepted = self.memory * self.accepted + step.n_accepted
        self.examined = self.memory * self.examined + step.n_accepted + (step.n_accepted < step.tau)
        if self.steps > 1:  # the first step also reads the whole prompt
            self.draft_ms.setdefault(step.tau, deque(maxlen=self.window)).append(1000 * step.draft_time)
            k = step.verify_tokens or step.tau + 1
            self.verify_ms.setdefault(k, deque(maxlen=self.window)).append(1000 * step.verify_time)
        self.tau = self._choose()

    def _line(self, samples: dict, proportional: bool = False):
        """x -> time: a straight line through the medians seen at each x (never falling with x). From one point only:
        proportional to x (``proportional``, drafting) or growing by ``slope`` of it per unit of x."""
        points = sorted((key, statistics.median(v)) for key, v in samples.items())
        if len(points) == 1:
            x0, y0 = points[0]
            return lambda x: y0 * x / x0 if proportional else y0 * (1 + self.slope * (x - x0))
        n = len(points)
        mean_x = sum(p for p, _ in points) / n
        mean_y = sum(q for _, q in points) / n
        b = max(sum((p - mean_x) * (q - mean_y) for p, q in points) / sum((p - mean_x) ** 2 for p, _ in points), 0.0)
        return lambda x: mean_y + b * (x - mean_x)

    def step_ms(self, tau: int) -> float:
        """Predicted time of a step with ``tau`` drafts: measured ``costs`` if given, else learned online."""
        if self.costs is not None:
            return self.costs.step_ms(tau)
        return self._line(self.draft_ms, proportional=True)(tau) + self._line(self.verify_ms)(tau + 1)

    def _choose(self) -> int:
        if self.costs is None and not self.verify_ms:
            return self.tau
        if self.costs is not None:
            step_ms = self.costs.step_ms
        else:  # fit both lines once for this step
            drafting, verifying = self._line(self.draft_ms, proportional=True), self._line(self.verify_ms)
            step_ms = lambda tau: drafting(tau) + verifying(tau + 1)  # noqa: E731
        alpha = min(self.alpha, 0.999)
        return max(range(1, self.max_tau + 1), key=lambda tau: expected_tokens_per_step(alpha, tau) / step_ms(tau))

    def next_tau(self) -> int:
        return self.tau

    def __repr__(self) -> str:
        return f"CostModelPolicy(tau={self.tau}, alpha≈{self.alpha:.2f}{', measured costs' if self.costs else ''})"


POLICY_NAMES = ("adaptive", "heuristic")


def make_policy(tau):
    """A policy from ``speculative_generate``'s ``tau``: a whole number (fixed), "adaptive" (``CostModelPolicy``),
    "heuristic" (``GrowShrink``), or an object with ``next_tau``, ``update`` and ``max_tau``."""
    if isinstance(tau, str):
        if tau == "adaptive":
            return CostModelPolicy()
        if tau == "heuristic":
            return GrowShrink()
        raise ValueError(f"tau={tau!r}: give a whole number ≥ 1, 'adaptive', 'heuristic' or a policy object")
    if all(hasattr(tau, name) for name in ("next_tau", "update", "max_tau")):
        return tau
    return FixedTau(tau)
