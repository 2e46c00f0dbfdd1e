"""Step 2: the target scores every draft token in ONE forward pass.

Feeding x, y≤i, ŷ_{i+1} … ŷ_{i+τ} once gives, at each position, the target's distribution for the
next token:  p_t = Pr_p(· | x, y≤i, ŷ_{i+1} … ŷ_{i+t-1})  for t = 1 … τ+1.
Row t-1 scores draft token ŷ_{i+t}; the last row (t = τ+1) is the bonus position after all drafts.
The target returns distributions, not accept/reject decisions: the acceptance rule decides.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .cache import cache_length
from .draft import distribution


@contextmanager
def output_layer_inputs(model, wanted: bool = True):
    """A list that collects what ``model``'s output layer reads (its last hidden states: the features) during the block
    (nothing is hooked when not ``wanted``)."""
    read: list[torch.Tensor] = []
    hook = (model.get_output_embeddings().register_forward_hook(lambda module, args, out: read.append(args[0]))
            if wanted else None)
    try:
        yield read
    finally:
        if hook is not None:
            hook.remove()


@torch.no_grad()
def verify_logits(target, input_ids: torch.Tensor, draft_ids, *, past_key_values=None, on_features=None) -> torch.Tensor:
    """The target's logits, shape (τ+1, vocab), at the τ draft positions and the one after them.

    ``on_features(features, first_position)``: called with what the target's output layer read in this same pass
    (its last hidden states, one row per fed position from ``first_position``), for a drafter that learns from them."""
    draft = torch.as_tensor(list(draft_ids), dtype=torch.long, device=input_ids.device).view(1, -1)
    sequence = torch.cat([input_ids, draft], dim=1)
    tau = draft.shape[1]
    seen = 0 if past_key_values is None else cache_length(past_key_values)
    if seen >= input_ids.shape[1]:
        raise ValueError(f"the target's cache already holds {seen} tokens of a {input_ids.shape[1]}-token prefix; "
                         "roll it back so at least the prefix's last token is fed")
    with output_layer_inputs(target, on_features is not None) as read:
        if past_key_values is not None:
            logits = target(sequence[:, seen:], past_key_values=past_key_values, use_cache=True).logits
        else:
            logits = target(sequence, use_cache=False).logits
    if on_features is not None:
        on_features(read[-1][0], first_position=seen)
    return logits[0, -(tau + 1):]


def verify(target, input_ids: torch.Tensor, draft_ids, *, past_key_values=None, temperature: float = 0.0,
           on_features=None) -> torch.Tensor:
    """The target's distributions p, shape (τ+1, vocab), from one forward pass (softmax(logits / T); T = 0 → T = 1)."""
    logits = verify_logits(target, input_ids, draft_ids, past_key_values=past_key_values, on_features=on_features)
    return distribution(logits, temperature)
