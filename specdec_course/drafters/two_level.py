"""Two-level drafting: speculation inside the draft.

The upper drafter (say the target's quantized copy: agrees with the target almost always, costs about half a target
pass) proposes τ tokens for the target. It does not run τ passes for them: a lower, much cheaper drafter (the small
draft model) proposes for it, and the upper model verifies those in one pass with the same four steps as the outer
loop (draft, verify, accept, correct). Each level pays for what it is good at.

The upper model's tokens and rows are exactly what it would have produced alone: the greedy rule gives its greedy
tokens; the sampling rule gives tokens distributed as its own distribution, whose row at each position is the q
the outer loop needs (the row its verification pass computed there).
"""
from __future__ import annotations

import torch

from ..accept import accept
from ..cache import CACHE_KINDS, cache_length, check_cache_matches, new_cache, rollback
from ..correction import correction_token
from ..draft import Draft, distribution
from ..verify import verify_logits
from .base import Drafter, as_drafter


class TwoLevelDrafter(Drafter):
    """``upper`` (a model) drafts for the target; ``lower`` (a model or any drafter) drafts ``inner_tau`` tokens at a
    time for ``upper``, which verifies them in one pass."""

    def __init__(self, upper, lower, *, inner_tau: int = 3, name: str | None = None):
        if isinstance(inner_tau, bool) or not isinstance(inner_tau, int) or inner_tau < 1:
            raise ValueError(f"inner_tau (the lower drafter's tokens per upper pass) must be a whole number ≥ 1, got {inner_tau!r}")
        if not isinstance(upper, torch.nn.Module) or not hasattr(upper, "config"):
            raise TypeError(f"the upper level must be a causal language model (it verifies the lower one), got {type(upper).__name__}")
        self.upper, self.lower = upper, as_drafter(lower)
        if self.lower.vocab_size != upper.config.vocab_size:
            raise ValueError(f"the lower drafter's vocabulary ({self.lower.vocab_size}) differs from the upper model's "
                             f"({upper.config.vocab_size})")
        self.inner_tau = inner_tau
        self.name = name or f"two-level ({getattr(upper, 'drafter_name', 'upper')} ← {self.lower.name})"
        self.cache = None
        self.upper_passes = 0  # upper-model passes so far (for measuring how well the lower level serves it)

    def start(self, prompt_ids, *, max_length, use_cache=True, cache_kind="dynamic"):
        if cache_kind not in CACHE_KINDS:
            raise ValueError(f"unknown cache_kind {cache_kind!r}: use one of {', '.join(map(repr, CACHE_KINDS))}")
        self.cache = new_cache(self.upper, cache_kind, max_length + self.inner_tau + 1) if use_cache else None
        self.lower.start(prompt_ids, max_length=max_length + self.inner_tau + 1, use_cache=use_cache, cache_kind=cache_kind)
        self.upper_passes = 0

    @torch.no_grad()
    def propose(self, sequence, tau, *, temperature=0.0, generator=None):
        rule = "sampling" if temperature > 0 else "greedy"
        tokens, rows = [], []
        while len(tokens) < tau:
            inner = min(self.inner_tau, tau - len(tokens) - 1)
            proposal = self.lower.propose(sequence, inner, temperature=temperature, generator=generator)
            logits = verify_logits(self.upper, sequence, proposal.tokens, past_key_values=self.cache)
            self.upper_passes += 1
            p = distribution(logits, temperature)
            verdict = accept(p, proposal.q, proposal.tokens, rule=rule, generator=generator)
            n = verdict.n
            new = proposal.tokens[:n] + [correction_token(p, proposal.q, n, rule=rule, generator=generator)]
            kept = sequence.shape[1] + n
            if self.cache is not None:
                rollback(self.cache, kept)
            self.lower.rollback(kept)
            tokens += new
            rows += [p[t] for t in range(n + 1)]  # the upper model's own distribution at each new token
            sequence = torch.cat([sequence, torch.tensor([new], device=sequence.device)], dim=1)
        return Draft(tokens=tokens[:tau], q=torch.stack(rows[:tau]) if rows else
                     torch.empty(0, self.vocab_size, device=sequence.device))

    def rollback(self, kept):
        if self.cache is not None:
            rollback(self.cache, min(kept, cache_length(self.cache)))
        self.lower.rollback(kept)

    def state_length(self):
        return None if self.cache is None else cache_length(self.cache)

    def check_state(self, sequence):
        if self.cache is not None:
            check_cache_matches(self.upper, self.cache, sequence)
        self.lower.check_state(sequence)

    @property
    def vocab_size(self):
        return self.upper.config.vocab_size

    @property
    def device(self):
        return torch.device(self.upper.device)

    @property
    def cost_model(self):
        return self.upper
