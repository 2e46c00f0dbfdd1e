"""Step 3: the acceptance rule decides how many draft tokens to keep.

For draft token ŷ_t with target probability p_t = Pr_p(ŷ_t | …) and draft probability q_t = Pr_q(ŷ_t | …):

* "textbook" / "sampling":  accept if p_t ≥ q_t; otherwise accept if r_t ≤ p_t / q_t, r_t ~ U[0, 1]
  (together: accept iff r_t ≤ min(1, p_t / q_t)). "textbook" drafts greedily, "sampling" (Leviathan et al.
  2023; Chen et al. 2023) samples the draft tokens from q, which makes the output follow p exactly.
* "greedy":  accept iff ŷ_t = argmax_y p_t(y), so the output is exactly the target's greedy output.

Only the consecutive accepted run from the start counts:  n = Σ_{t=1}^{τ} Π_{s=1}^{t} a_s,
so the first rejection ends the step, whatever comes after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RULES = ("textbook", "greedy", "sampling")


@dataclass
class Acceptance:
    n: int                  # consecutively accepted draft tokens
    accepted: list[bool]    # the rule's verdict on every draft token (those after the first rejection do not count)
    p: list[float]          # target probability of each draft token
    q: list[float]          # draft probability of each draft token
    r: list[float] | None   # the uniform numbers used (None for the greedy rule)


def consecutive_accepted(accepted) -> int:
    """n = Σ_t Π_{s≤t} a_s: the length of the run of acceptances at the start."""
    n = 0
    for verdict in accepted:
        if not verdict:
            break
        n += 1
    return n


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: use one of {', '.join(map(repr, RULES))}")
    return rule


def accept(p: torch.Tensor, q: torch.Tensor, draft_ids, *, rule: str = "textbook", r=None,
           generator: torch.Generator | None = None) -> Acceptance:
    """How many of the drafts to keep. ``p``: (≥τ, vocab) target distributions (rows beyond τ are ignored);
    ``q``: (τ, vocab) draft distributions; ``r``: optional τ uniform numbers (for a reproducible worked example)."""
    check_rule(rule)
    draft_ids = [int(t) for t in draft_ids]
    tau = len(draft_ids)
    if p.shape[0] < tau or q.shape[0] < tau:
        raise ValueError(f"need a row of p and of q for each of the {tau} draft tokens, got {p.shape[0]} and {q.shape[0]}")
    p_tok = [float(p[t, y]) for t, y in enumerate(draft_ids)]
    q_tok = [float(q[t, y]) for t, y in enumerate(draft_ids)]
    if rule == "greedy":
        accepted = [int(torch.argmax(p[t])) == y for t, y in enumerate(draft_ids)]
        return Acceptance(consecutive_accepted(accepted), accepted, p_tok, q_tok, None)
    if r is None:
        r = torch.rand(tau, generator=generator).tolist()
    r = [float(x) for x in r]
    if len(r) < tau:
        raise ValueError(f"need one random number r per draft token ({tau}), got {len(r)}")
    if any(not 0.0 <= x <= 1.0 for x in r):
        raise ValueError("every r must lie in [0, 1]")
    accepted = [pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p_tok, q_tok, r)]
    return Acceptance(consecutive_accepted(accepted), accepted, p_tok, q_tok, r[:tau])


def alpha_from_steps(steps) -> float:
    """α estimated from steps: accepted drafts / drafts the rule looked at (each step looks at its n accepted drafts
    and, when n < τ, the one it rejected). Under independence this is the maximum-likelihood estimate."""
    accepted = sum(s.n_accepted for s in steps)
    examined = sum(s.n_accepted + (s.n_accepted < s.tau) for s in steps)
    return accepted / examined if examined else float("nan")


def kept_fraction_of_steps(steps) -> float:
    """κ of a run: accepted drafts / proposed drafts."""
    drafted = sum(s.tau for s in steps)
    return sum(s.n_accepted for s in steps) / drafted if drafted else float("nan")
