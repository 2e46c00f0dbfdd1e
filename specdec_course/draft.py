"""Step 1 of speculative decoding: the draft model proposes τ tokens.

Greedy drafting:  ŷ_{i+t} = argmax_y Pr_q(y | x, y≤i, ŷ_{i+1} … ŷ_{i+t-1}),  t = 1 … τ.
Each draft token is conditioned on the prefix AND every draft token before it, so drafting is itself
autoregressive: τ small forward passes, one after another.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import cache_length


@dataclass
class Draft:
    tokens: list[int]     # ŷ_{i+1} … ŷ_{i+τ}
    q: torch.Tensor       # (τ, vocab): the draft's distribution at each drafted position

    @property
    def q_of_tokens(self) -> list[float]:
        """Pr_q of each drafted token."""
        return [float(self.q[t, y]) for t, y in enumerate(self.tokens)]


def distribution(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32; T = 0 (greedy) uses the plain softmax (T = 1)."""
    return torch.softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)


@torch.no_grad()
def draft_tokens(draft, input_ids: torch.Tensor, tau: int, *, temperature: float = 0.0,
                 generator: torch.Generator | None = None, past_key_values=None) -> Draft:
    """Propose ``tau`` tokens after ``input_ids`` (shape (1, n)) with the draft model.

    temperature 0: each token is the argmax of q (greedy); temperature > 0: each is sampled from
    softmax(logits / T). With ``past_key_values`` only the positions the cache has not seen are fed;
    the cache then holds the prefix and ŷ_{i+1} … ŷ_{i+τ-1} (the last draft token is never fed).
    """
    if tau < 0:
        raise ValueError(f"tau must be at least 0, got {tau}")
    tokens: list[int] = []
    rows: list[torch.Tensor] = []
    sequence = input_ids
    for _ in range(tau):
        if past_key_values is not None:
            logits = draft(sequence[:, cache_length(past_key_values):], past_key_values=past_key_values, use_cache=True).logits
        else:
            logits = draft(sequence, use_cache=False).logits
        q = distribution(logits[0, -1], temperature)
        if temperature > 0:
            token = int(torch.multinomial(q.cpu(), 1, generator=generator))
        else:
            token = int(torch.argmax(q))
        tokens.append(token)
        rows.append(q)
        # the next draft token is conditioned on this one too
        sequence = torch.cat([sequence, torch.tensor([[token]], device=sequence.device)], dim=1)
    vocab = draft.config.vocab_size
    q = torch.stack(rows) if rows else torch.empty(0, vocab, device=input_ids.device)
    return Draft(tokens=tokens, q=q)
