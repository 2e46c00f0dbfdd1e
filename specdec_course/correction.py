"""Step 4: the target supplies one more token at position n + 1.

textbook / greedy:  y_{i+n+1} = argmax_y Pr_p(y | x, y≤i, ŷ_{i+1} … ŷ_{i+n}), from the TARGET's row n
(its distribution right after the accepted drafts), never the draft's.
sampling:  after a rejection, sample from the residual norm(max(0, p_{n+1} − q_{n+1})); when all τ drafts
were accepted, sample the bonus token from p_{τ+1}. This is what makes sampled output follow p exactly.
"""
from __future__ import annotations

import torch

from .accept import check_rule


def residual(p_row: torch.Tensor, q_row: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p − q)): where the target wants more probability than the draft gave."""
    mass = torch.clamp(p_row - q_row, min=0)
    total = mass.sum()
    return mass / total if total > 0 else p_row  # p == q: nothing was rejected for a reason; fall back to p


def correction_token(p: torch.Tensor, q: torch.Tensor, n: int, *, rule: str = "textbook",
                     generator: torch.Generator | None = None) -> int:
    """The token the target supplies after ``n`` accepted drafts. ``p``: (τ+1, vocab); ``q``: (τ, vocab)."""
    check_rule(rule)
    tau = q.shape[0]
    if not 0 <= n <= tau or p.shape[0] < n + 1:
        raise ValueError(f"n must be between 0 and τ = {tau}, with a row of p for position n + 1; got n = {n}")
    if rule in ("textbook", "greedy"):
        return int(torch.argmax(p[n]))
    row = p[n] if n == tau else residual(p[n], q[n])  # bonus token after τ acceptances, else the residual
    return int(torch.multinomial(row.float().cpu(), 1, generator=generator))
