"""The full speculative decoding loop.

One step, from the current sequence x, y≤i:
  1. draft      ŷ_{i+1} … ŷ_{i+τ}                  (τ cheap draft passes)
  2. verify     p_1 … p_{τ+1}                       (ONE target pass over all τ drafts)
  3. accept     n = consecutive accepted drafts     (the acceptance rule)
  4. correct    y_{i+n+1} from the target's p_{n+1}  (correction, or bonus token when n = τ)
The sequence grows to  x, y≤i, ŷ_{i+1} … ŷ_{i+n}, y_{i+n+1}:  n + 1 new tokens for one target pass.
With KV caches, both caches are then rolled back to the tokens that were actually kept.
The drafter is a draft model or anything else that proposes tokens with their q (``specdec_course.drafters``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .perf import clock
from .accept import accept, alpha_from_steps, check_rule, kept_fraction_of_steps
from .cache import CACHE_KINDS, cache_length, check_cache_matches, default_cache_kind, new_cache, rollback
from .correction import correction_token
from .drafters.base import as_drafter
from .generation import as_input_ids, check_max_new_tokens, check_temperature, decode, make_generator, sync
from .verify import verify


@dataclass
class StepTrace:
    """What happened in one draft → verify → accept → correct step."""

    draft_tokens: list[int]
    q: list[float]            # draft probability of each draft token
    p: list[float]            # target probability of each draft token
    r: list[float] | None     # uniform numbers used by the rule (None for "greedy")
    accepted: list[bool]      # the rule's verdict on each draft token
    n_accepted: int           # consecutive accepted drafts
    correction: int           # the target's token at position n + 1
    emitted: list[int]        # the tokens this step added (accepted drafts + correction, cut at EOS)
    draft_time: float
    verify_time: float
    verify_tokens: int = 0             # tokens the target read in its one pass (τ + 1, more on the first step)
    kept: int = 0                      # sequence length the caches must hold after the step (prefix + accepted)
    target_cache: int | None = None    # tokens in the target's cache after the step (None without a cache)
    draft_cache: int | None = None
    target_calls: int | None = None    # target forward passes during verification (recorded when tracing)

    @property
    def tau(self) -> int:
        return len(self.draft_tokens)

    @property
    def bonus(self) -> bool:
        """True when every draft was accepted, so the target's token is a free extra."""
        return self.n_accepted == self.tau


@dataclass
class SpecResult:
    tokens: list[int]
    text: str | None
    steps: list[StepTrace] = field(repr=False)
    total_time: float = 0.0
    prompt_length: int = 0

    @property
    def target_passes(self) -> int:
        return len(self.steps)

    @property
    def drafted(self) -> int:
        return sum(s.tau for s in self.steps)

    @property
    def kept_fraction(self) -> float:
        """κ = accepted drafts / proposed drafts: the share of the draft's work that was kept. Falls as τ grows."""

        return kept_fraction_of_steps(self.steps)

    @property
    def alpha(self) -> float:
        """α estimated from this run: accepted drafts / drafts the rule looked at (the n accepted and, when n < τ,
        the rejected one). The per-position acceptance probability of the cost model; does not depend on τ."""

        return alpha_from_steps(self.steps)

    @property
    def mean_tokens_per_step(self) -> float:
        return len(self.tokens) / self.target_passes if self.steps else float("nan")

    @property
    def draft_time(self) -> float:
        return sum(s.draft_time for s in self.steps)

    @property
    def verify_time(self) -> float:
        return sum(s.verify_time for s in self.steps)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.total_time if self.total_time > 0 else float("nan")

    def summary(self) -> str:
        return (f"{len(self.tokens)} tokens in {self.target_passes} target passes "
                f"({self.mean_tokens_per_step:.2f} tokens per pass), α ≈ {self.alpha:.2f}, kept fraction κ = {self.kept_fraction:.2f}, "
                f"{self.tokens_per_second:.1f} tokens/s (draft {self.draft_time:.2f} s, verify {self.verify_time:.2f} s)")

    def __len__(self) -> int:
        return len(self.tokens)


def check_drafter(target, drafter) -> None:
    """Raise a clear ValueError unless ``drafter`` proposes tokens the target understands, on the target's device."""
    from .models import check_pair

    if hasattr(drafter, "model"):
        check_pair(target, drafter.model)
        return
    if drafter.vocab_size != target.config.vocab_size:
        raise ValueError(f"the drafter proposes token ids from a vocabulary of {drafter.vocab_size}, the target has "
                         f"{target.config.vocab_size}: speculative decoding needs the target's token ids")
    target_device = torch.device(target.device)
    if drafter.device.type != target_device.type:
        raise ValueError(f"the target is on {target_device} and the drafter on {drafter.device}: put both on the same device")


@torch.no_grad()
def speculative_generate(target, drafter, input_ids, max_new_tokens: int, *, tau=4, rule: str = "greedy",
                         temperature: float = 0.0, seed: int | None = None, use_cache: bool = True,
                         eos_token_id: int | None = None, tokenizer=None, cache_kind: str | None = None,
                         debug: bool = False, trace=None, draft_input_ids=None) -> SpecResult:
    """Generate up to ``max_new_tokens`` tokens with the target, τ draft tokens per target pass.

    ``drafter``: a draft model (a causal LM with the target's vocabulary) or a ``specdec_course.drafters.Drafter``
    (the target's quantized copy, a two-level drafter, prompt lookup, ...).

    rule "greedy" (temperature 0): output identical to the target's greedy decoding.
    rule "sampling" (temperature > 0): output distributed exactly as the target's sampling at that temperature.
    rule "textbook": greedy drafts, accept if p ≥ q or r ≤ p/q, correct with the target's argmax.

    ``tau``: a whole number, "adaptive" (τ chosen each step from the cost model, learned online), "heuristic"
    (grow after a fully accepted step, shrink after a rejection) or a policy object (``specdec_course.perf.policies``).
    ``use_cache``: keep a KV cache per model for the whole generation, rolled back after every step
    (``cache_kind`` "dynamic" or "static"; default static on CUDA, dynamic elsewhere); False recomputes
    everything each step. ``debug``: after every step, assert both caches hold exactly the kept tokens.
    ``trace``: a file path: write the run as JSON lines (``specdec_course.perf.trace``). ``draft_input_ids``: the prompt
    as the draft sees it, when it differs from the target's (default: the same prompt).
    """
    from .perf.policies import make_policy
    from .perf.trace import count_calls, write_trace

    check_rule(rule)
    policy = make_policy(tau)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    temperature = check_temperature(temperature)
    if rule == "sampling" and temperature == 0:
        raise ValueError("rule='sampling' samples from the target's distribution: give a temperature > 0 "
                         "(or use rule='greedy' for greedy decoding)")
    if rule != "sampling" and temperature > 0:
        raise ValueError(f"rule={rule!r} drafts and corrects greedily and ignores temperature; use rule='sampling' "
                         "to sample, or temperature=0")
    drafter = as_drafter(drafter)
    check_drafter(target, drafter)
    ids = as_input_ids(input_ids, target, max_new_tokens)
    draft_ids = ids if draft_input_ids is None else as_input_ids(draft_input_ids, target, max_new_tokens)
    if drafter.wants_features and draft_ids is not ids:
        raise ValueError("a drafter that reads the target's features sees the target's own sequence: "
                         "leave draft_input_ids out")
    tokenizer = tokenizer if tokenizer is not None else getattr(target, "tokenizer", None)
    generator = make_generator(seed) if seed is not None else None
    draft_temperature = temperature if rule == "sampling" else 0.0

    if cache_kind is None:
        cache_kind = default_cache_kind(ids.device)
    if cache_kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache_kind {cache_kind!r}: use one of {', '.join(map(repr, CACHE_KINDS))}")
    capacity = max(ids.shape[1], draft_ids.shape[1]) + max_new_tokens + 1  # a step never reaches past the last new token
    target_cache = new_cache(target, cache_kind, capacity) if use_cache else None
    drafter.start(draft_ids, max_length=capacity, use_cache=use_cache, cache_kind=cache_kind)
    # a drafter that reads the target's features gets them from the verification pass itself
    hand_features = {"on_features": drafter.observe_features} if drafter.wants_features else {}
    calls = count_calls(target) if trace is not None else None
    sequence, draft_sequence, tokens, steps = ids, draft_ids, [], []
    start = clock.now()
    try:
        while len(tokens) < max_new_tokens:
            step_tau = min(policy.next_tau(), max_new_tokens - len(tokens) - 1)  # room for n drafts + 1 target token
            target_calls_before = calls.count if calls else None
            target_seen = cache_length(target_cache)

            t0 = clock.now()
            proposal = drafter.propose(draft_sequence, step_tau, temperature=draft_temperature, generator=generator)
            if len(proposal.tokens) > step_tau or proposal.q.shape[0] != len(proposal.tokens):
                raise ValueError(f"the drafter was asked for at most {step_tau} tokens and returned {len(proposal.tokens)} "
                                 f"with {proposal.q.shape[0]} rows of q: propose at most τ tokens, one row of q each")
            step_tau = len(proposal.tokens)  # a drafter may propose fewer (prompt lookup without a match)
            sync(ids.device)
            t1 = clock.now()
            p = verify(target, sequence, proposal.tokens, past_key_values=target_cache, temperature=temperature,
                       **hand_features)
            sync(ids.device)
            t2 = clock.now()

            verdict = accept(p, proposal.q, proposal.tokens, rule=rule, generator=generator)
            n = verdict.n
            correction = correction_token(p, proposal.q, n, rule=rule, generator=generator)
            emitted = proposal.tokens[:n] + [correction]
            if eos_token_id is not None and eos_token_id in emitted:
                emitted = emitted[: emitted.index(eos_token_id) + 1]

            kept = sequence.shape[1] + n  # prefix + accepted drafts; the correction token is not in any cache yet
            draft_kept = draft_sequence.shape[1] + n
            if use_cache:
                rollback(target_cache, kept)
            drafter.rollback(draft_kept)
            steps.append(StepTrace(proposal.tokens, verdict.q, verdict.p, verdict.r, verdict.accepted, n, correction,
                                   emitted, t1 - t0, t2 - t1,
                                   verify_tokens=sequence.shape[1] + step_tau - target_seen, kept=kept,
                                   target_cache=cache_length(target_cache) if use_cache else None,
                                   draft_cache=drafter.state_length() if use_cache else None,
                                   target_calls=calls.count - target_calls_before if calls else None))
            policy.update(steps[-1])
            tokens += emitted
            new = torch.tensor([emitted], device=ids.device)
            sequence = torch.cat([sequence, new], dim=1)
            draft_sequence = torch.cat([draft_sequence, new], dim=1)
            if eos_token_id is not None and emitted[-1] == eos_token_id:
                break
            if debug and use_cache:
                # invariants: each cache holds exactly the tokens its model has consumed, all of them kept ones
                assert cache_length(target_cache) == kept == sequence.shape[1] - 1, "target cache out of step"
                assert (drafter.state_length() or 0) <= draft_kept, "the drafter's state holds a rejected token"
                check_cache_matches(target, target_cache, sequence)
                drafter.check_state(draft_sequence)
    finally:
        if calls:
            calls.remove()
    result = SpecResult(tokens=tokens, text=decode(tokenizer, tokens), steps=steps,
                        total_time=clock.now() - start, prompt_length=ids.shape[1])
    if trace is not None:
        write_trace(trace, result, target=target, draft=drafter, rule=rule, policy=policy, cache_kind=cache_kind if use_cache else None,
                    draft_prompt_length=draft_ids.shape[1], max_new_tokens=max_new_tokens)
    return result
