"""The cost model: how many tokens a step yields, what a step costs, and the speedup that follows.

Two acceptance numbers, never to be confused:
* α, the acceptance probability: the chance that the draft token at one position is accepted, given that every
  draft before it in the step was. A property of the draft/target pair on some text.
* κ, the kept fraction of a run: accepted drafts / proposed drafts. It depends on τ as well as on α, because the
  first rejection of a step discards every draft after it.
If positions were accepted independently with probability α (Leviathan et al. 2023):
    E[tokens per step] = (1 − α^{τ+1}) / (1 − α)         (accepted drafts + the target's own token)
    κ = (E − 1) / τ = α (1 − α^τ) / ((1 − α) τ)
A step costs τ draft passes and one target pass over τ + 1 tokens:
    step time = τ·d + T(τ + 1) + o,  target-only time per token = T(1) + o₁
so the speedup is E · (T(1) + o₁) / (τ·d + T(τ + 1) + o).

Real text is not independent: easy stretches (a list's next number, a closing bracket) are accepted in long runs and
hard ones fail at once, so with the same α long steps are more likely than the formula says. ``acceptance_profile``
measures the conditional α at each depth of a step from a trace, and ``replay_greedy`` gives the exact tokens per step
of greedy speculative decoding from the positions where the draft agrees with the target.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..accept import alpha_from_steps, kept_fraction_of_steps  # noqa: F401 (statistics of a run's steps)
from . import clock


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (acceptance probability per position) must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def expected_tokens_per_step(alpha: float, tau: int) -> float:
    """E[tokens per target pass] = (1 − α^{τ+1}) / (1 − α) if each draft is accepted independently with probability α
    (n accepted drafts plus the target's own token; τ + 1 when α = 1)."""
    alpha = check_alpha(alpha)
    if alpha == 1:
        return float(tau + 1)
    return (1 - alpha ** (tau + 1)) / (1 - alpha)


def kept_fraction(alpha: float, tau: int) -> float:
    """κ = E[accepted drafts] / τ = α (1 − α^τ) / ((1 − α) τ): the fraction of proposed drafts a run keeps."""
    return (expected_tokens_per_step(alpha, tau) - 1) / tau


def alpha_from_kept_fraction(kappa: float, tau: int) -> float:
    """The α that gives kept fraction κ at this τ (the inverse of ``kept_fraction``, by bisection)."""
    if not 0 <= kappa <= 1:
        raise ValueError(f"kept fraction must be in [0, 1], got {kappa}")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if kept_fraction(middle, tau) < kappa else (low, middle)
    return (low + high) / 2


def acceptance_profile(steps, max_depth: int | None = None, *, min_reached: int = 10) -> list[float]:
    """α_t for t = 1, 2, ...: of the steps that reached draft t (all drafts before it accepted), the fraction that
    accepted it. Flat at α when positions are independent; rising when acceptances come in runs. Stops at the first
    depth fewer than ``min_reached`` steps reached (too few to estimate a fraction)."""
    max_depth = max_depth or max((s.tau for s in steps), default=0)
    profile = []
    for depth in range(1, max_depth + 1):
        reached = [s for s in steps if s.tau >= depth and s.n_accepted >= depth - 1]
        if len(reached) < min_reached:
            break
        profile.append(sum(s.n_accepted >= depth for s in reached) / len(reached))
    return profile


def tokens_per_step_from_profile(profile: list[float], tau: int) -> float:
    """E[tokens per step] = 1 + Σ_{t=1}^{τ} Π_{s≤t} α_s, with α_s past the end of the profile equal to its last value."""
    if not profile:
        raise ValueError("the acceptance profile is empty: measure it from steps with τ ≥ 1")
    expected, survive = 1.0, 1.0
    for depth in range(1, tau + 1):
        survive *= profile[min(depth, len(profile)) - 1]
        expected += survive
    return expected


def agreement_runs(matches: list[bool]) -> list[int]:
    """For each position i, how many consecutive positions from i on the draft's greedy token equals the target's."""
    runs, run = [0] * len(matches), 0
    for i in range(len(matches) - 1, -1, -1):
        run = run + 1 if matches[i] else 0
        runs[i] = run
    return runs


def replay_greedy(matches: list[bool], tau: int) -> tuple[int, int]:
    """(tokens, target passes) of greedy speculative decoding along the target's greedy continuation, given where the
    draft's greedy token matches the target's (teacher-forced). Exact, not a model: in greedy decoding every accepted
    draft IS the target's token, so the draft sees the same prefix as in the teacher-forced pass, and a step starting
    at position i accepts min(run from i, τ) drafts and adds the target's token after them."""
    runs = agreement_runs(matches)
    position, passes = 0, 0
    while position < len(matches):
        position += min(runs[position], tau) + 1
        passes += 1
    return len(matches), passes


@dataclass
class Costs:
    """Measured costs in milliseconds: ``target_ms[k]`` = T(k), one cached target pass over k new tokens;
    ``draft_ms`` = d, one cached draft pass over one token; ``draft_step_ms`` = d₀, what drafting costs once per step
    beyond τ·d (its first pass runs right after the target's, with the draft's weights pushed out of the CPU's caches);
    ``overhead_ms`` = o, the loop's own work per step (choosing, comparing, rolling back) and ``target_overhead_ms``
    = o₁, the same per token for target-only decoding."""

    target_ms: dict[int, float]
    draft_ms: float
    overhead_ms: float = 0.0
    target_overhead_ms: float = 0.0
    draft_step_ms: float = 0.0
    source: str = field(default="", compare=False)
    scale: float = field(default=1.0, compare=False)  # the factor ``scaled`` applied to the measured costs

    def __post_init__(self):
        self.target_ms = {int(k): float(v) for k, v in self.target_ms.items()}
        if 1 not in self.target_ms:
            raise ValueError("costs need T(1), the one-token target pass (target_ms[1])")

    def verify_ms(self, k: int) -> float:
        """T(k), interpolated linearly between measured k (and extended along the last two beyond them)."""
        if k in self.target_ms:
            return self.target_ms[k]
        ks = sorted(self.target_ms)
        if len(ks) == 1:
            return self.target_ms[ks[0]]
        below = [x for x in ks if x < k]
        above = [x for x in ks if x > k]
        a, b = (below[-1], above[0]) if below and above else ((ks[-2], ks[-1]) if below else (ks[0], ks[1]))
        return self.target_ms[a] + (self.target_ms[b] - self.target_ms[a]) * (k - a) / (b - a)

    @property
    def c(self) -> float:
        """c = d / T(1): one draft token in units of one target token."""
        return self.draft_ms / self.target_ms[1]

    def step_ms(self, tau: int) -> float:
        """d₀ + τ·d + T(τ+1) + o (τ = 0: a plain target step, T(1) + o₁)."""
        if tau == 0:
            return self.target_ms[1] + self.target_overhead_ms
        return self.draft_step_ms + tau * self.draft_ms + self.verify_ms(tau + 1) + self.overhead_ms

    def speedup(self, tokens_per_step: float, tau: int) -> float:
        """Tokens per step × (time per target-only token) / (time per step)."""
        return tokens_per_step * (self.target_ms[1] + self.target_overhead_ms) / self.step_ms(tau)

    def scaled(self, factor: float) -> "Costs":
        """The same cost set at another moment of a machine whose speed drifts: every T(k), d and d₀ times ``factor``
        (T(k)/T(1), c and the predicted speedups stay as they are); o and o₁ scaled alike."""
        if not factor > 0:
            raise ValueError(f"a cost set is scaled by a factor > 0, got {factor!r}")
        return Costs({k: factor * v for k, v in self.target_ms.items()}, factor * self.draft_ms,
                     overhead_ms=factor * self.overhead_ms, target_overhead_ms=factor * self.target_overhead_ms,
                     draft_step_ms=factor * self.draft_step_ms, source=self.source, scale=self.scale * factor)

    def to_dict(self) -> dict:
        return {"target_ms": self.target_ms, "draft_ms": self.draft_ms, "draft_step_ms": self.draft_step_ms,
                "overhead_ms": self.overhead_ms, "target_overhead_ms": self.target_overhead_ms, "c": self.c,
                "source": self.source, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> "Costs":
        """The cost set ``to_dict`` wrote (``c`` is computed, not read)."""
        keys = ("target_ms", "draft_ms", "overhead_ms", "target_overhead_ms", "draft_step_ms", "source", "scale")
        return cls(**{k: data[k] for k in keys if k in data})


def predict(costs: Costs, alpha: float, taus=range(1, 9), *, profile: list[float] | None = None,
            matches: list[list[bool]] | None = None) -> list[dict]:
    """For each τ: tokens per step and speedup predicted from independent positions (α), and, where given, from a
    measured acceptance profile (``profile``) and from an exact greedy replay (``matches``: per prompt, where the
    draft agrees with the target along its greedy continuation)."""
    alpha = check_alpha(alpha)
    rows = []
    for tau in taus:
        row = {"tau": tau, "tokens_per_step": expected_tokens_per_step(alpha, tau), "kept_fraction": kept_fraction(alpha, tau)}
        row["speedup"] = costs.speedup(row["tokens_per_step"], tau)
        if profile:
            row["tokens_per_step_profile"] = tokens_per_step_from_profile(profile, tau)
            row["speedup_profile"] = costs.speedup(row["tokens_per_step_profile"], tau)
        if matches:
            tokens, passes = map(sum, zip(*(replay_greedy(m, tau) for m in matches)))
            row["tokens_per_step_replay"] = tokens / max(passes, 1)
            row["speedup_replay"] = costs.speedup(row["tokens_per_step_replay"], tau)
        rows.append(row)
    return rows


def best_tau(costs: Costs, alpha: float, taus=range(1, 17), *, profile: list[float] | None = None) -> int:
    """The τ with the largest predicted speedup (from the profile when given, else from α)."""
    def score(tau):
        expected = tokens_per_step_from_profile(profile, tau) if profile else expected_tokens_per_step(alpha, tau)
        return costs.speedup(expected, tau)

    return max(taus, key=score)


@torch.no_grad()
def predicted_run_speedup(costs: Costs, alpha: float, taus, tokens: int, *, target_prefill_ms: float = 0.0,
                          draft_prefill_ms: float = 0.0) -> float:
    """The cost model's speedup for whole runs that emit ``tokens`` tokens with the steps' τ in ``taus`` (a drafter may
    propose fewer than asked, none when it has nothing, and a run's last step is cut short). Both ways pay the target's
    pass over the prompts P_T; speculative decoding also the drafter's, P_D; each step yields E(α, τ) tokens on average:
        target-only  = P_T + N · (T(1) + o₁)
        speculative  = P_T + P_D + N / mean E(α, τ_s) · mean (d₀ + τ_s·d + T(τ_s + 1) + o)
    """
    taus = list(taus)
    if not taus or tokens < 1:
        raise ValueError("a run's prediction needs its steps' τ and at least one token")
    alpha = min(max(alpha, 0.0), 0.9999)
    per_step_tokens = statistics.fmean(expected_tokens_per_step(alpha, t) if t else 1.0 for t in taus)
    per_step_ms = statistics.fmean(costs.step_ms(t) for t in taus)
    alone = target_prefill_ms + tokens * (costs.target_ms[1] + costs.target_overhead_ms)
    return alone / (target_prefill_ms + draft_prefill_ms + tokens / per_step_tokens * per_step_ms)


def draft_costs(target, draft, *, prefix_length: int = 96, taus=(1, 5), repeats: int = 5, seed: int = 0,
                prefix: torch.Tensor | None = None) -> tuple[float, float]:
    """(d₀, d) in ms as the loop pays them: the drafter (a draft model or any ``Drafter``) proposing τ tokens with its
    cache, each call right after one cached target pass (as in a step, so the drafter starts with its weights pushed
    out of the CPU's caches), for two values of τ; the drafter's time per step is fitted as d₀ + τ·d.
    ``prefix``: the token ids (1, n) to draft after (default: ``prefix_length`` random ones; a drafter whose cost
    depends on the text, such as a two-level one, is better timed on real text)."""
    from ..cache import rollback
    from ..drafters.base import as_drafter
    from ..generation import sync

    drafter = as_drafter(draft)
    device = next(target.parameters()).device
    if prefix is None:
        gen = torch.Generator().manual_seed(seed)
        prefix = torch.randint(0, target.config.vocab_size, (1, prefix_length), generator=gen)
    prefix = prefix.to(device)
    prefix_length = prefix.shape[1]
    target_cache = DynamicCache(config=target.config)
    target(prefix[:, :-1], past_key_values=target_cache, use_cache=True)
    drafter.start(prefix, max_length=prefix_length + max(taus) + 1)
    if drafter.wants_features:  # a feature head drafts from the target's features, which verification hands it
        from ..verify import output_layer_inputs

        with output_layer_inputs(target) as read:
            target(prefix, use_cache=False)
        drafter.observe_features(read[-1][0], first_position=0)
    drafter.propose(prefix[:, :-1], 1)  # reads the prefix but its last token, as the loop's drafter has before a step
    drafter.rollback(prefix_length - 1)
    times = {tau: [] for tau in taus}
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for tau in taus:
            target(prefix[:, -1:], past_key_values=target_cache, use_cache=True)
            rollback(target_cache, prefix_length - 1)
            sync(device)
            start = clock.now()
            drafter.propose(prefix, tau)
            sync(device)
            if repeat:
                times[tau].append(1000 * (clock.now() - start))
            drafter.rollback(prefix_length - 1)
    (t1, m1), (t2, m2) = [(tau, statistics.median(v)) for tau, v in times.items()]
    d = max((m2 - m1) / (t2 - t1), 0.0)
    return max(m1 - t1 * d, 0.0), d


def measure_costs(target, draft, ks=range(1, 10), *, prefix_length: int = 96, repeats: int = 5) -> Costs:
    """T(k) for each k on the target's current kernel path (median of ``repeats`` cached passes after a prefix of
    ``prefix_length`` random tokens, ``kernels.pass_times``), and the draft's d₀ and d (``draft_costs``). The loop's
    own overheads o and o₁ are not measured here (0): ``run_benchmark`` measures them on a target-only run."""
    from .kernels import current_pass_times, kernel_path

    target_path = kernel_path(target)
    target_s = current_pass_times(target, ks, prefix_length=prefix_length, repeats=repeats)
    d0, d = draft_costs(target, draft, prefix_length=prefix_length, repeats=repeats)
    return Costs({k: 1000 * s for k, s in target_s.items()}, d, draft_step_ms=d0,
                 source=f"target: pass_times on {target_path}, prefix {prefix_length}, median of {repeats}; "
                        f"draft: {_drafter_label(draft)} after a target pass")


def _drafter_label(draft) -> str:
    from ..drafters.base import as_drafter
    from .kernels import kernel_path

    drafter = as_drafter(draft)
    model = drafter.cost_model
    return f"{drafter.name} on {kernel_path(model)}" if model is not None else drafter.name


def run_speedup(costs: Costs, prompts: list[tuple[float, int, float]], tau: int) -> float:
    """Predicted speedup of a whole run: each prompt given as (prefill ms, tokens, target passes). Target-only: the
    prefill pass gives the first token, then T(1) + o₁ per token. Speculative: the first step's drafts (d₀ + τ·d),
    verified in the prefill pass itself (the prompt and the τ drafts in one pass), then one step per later pass."""
    target_ms = sum(prefill + (tokens - 1) * costs.step_ms(0) for prefill, tokens, _ in prompts)
    first_drafts = costs.draft_step_ms + tau * costs.draft_ms
    speculative_ms = sum(prefill + first_drafts + max(passes - 1, 0) * costs.step_ms(tau) for prefill, _, passes in prompts)
    return target_ms / speculative_ms


def median_ms(seconds) -> float:
    seconds = list(seconds)
    return 1000 * statistics.median(seconds) if seconds else float("nan")
