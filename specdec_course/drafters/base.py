"""What the speculative loop asks of a drafter, and the draft model as one.

A drafter proposes τ tokens after the current sequence, each with the distribution q it was drawn from, and is told
after verification how much of the sequence was kept, so it can forget the rest of its state (its KV cache, say):

    drafter.start(prompt_ids, max_length=…, use_cache=…, cache_kind=…)   once per generation
    draft = drafter.propose(sequence, tau, temperature=…, generator=…)   step 1 of every step: a ``Draft``
    drafter.rollback(kept)                                               after verification: the first ``kept``
                                                                         tokens of the sequence are final
A drafter that learns from the target's own features sets ``wants_features``; verification then hands it the
target's last hidden states of the kept positions with ``observe_features`` (they come with the verification pass,
no second target pass).
"""
from __future__ import annotations

import torch

from ..cache import CACHE_KINDS, cache_length, check_cache_matches, new_cache, rollback
from ..draft import Draft, draft_tokens


class Drafter:
    """The base of every drafter: ``propose`` is the one method each must write; the others default to "no state"."""

    name = "drafter"
    wants_features = False

    def start(self, prompt_ids: torch.Tensor, *, max_length: int, use_cache: bool = True, cache_kind: str = "dynamic") -> None:
        """Begin a generation after ``prompt_ids`` (shape (1, n)); the sequence never grows beyond ``max_length``."""

    def propose(self, sequence: torch.Tensor, tau: int, *, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> Draft:
        raise NotImplementedError(f"{type(self).__name__} must define propose(sequence, tau, temperature=, generator=)")

    def rollback(self, kept: int) -> None:
        """The first ``kept`` tokens of the sequence are final: forget any state about later positions."""

    def observe_features(self, features: torch.Tensor, first_position: int) -> None:
        """(Only when ``wants_features``.) The target's last hidden states for positions first_position …, one row
        each, from its verification pass; rows past the kept positions are forgotten by the next ``rollback``."""

    def state_length(self) -> int | None:
        """Tokens the drafter's state (its cache) holds now; None for a drafter without one."""
        return None

    def check_state(self, sequence: torch.Tensor) -> None:
        """Debug check: the drafter's state describes ``sequence[:, :state_length()]`` exactly."""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def cost_model(self):
        """The module whose forward passes the drafter's time is spent in (None: not a model)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class ModelDrafter(Drafter):
    """A small causal LM proposes greedily (or samples) τ tokens, one pass each, with a KV cache rolled back after
    every step:  ŷ_{i+t} = argmax_y q(y | x, y≤i, ŷ_{i+1} … ŷ_{i+t-1})."""

    def __init__(self, model, name: str | None = None):
        if not hasattr(model, "config") or not callable(model):
            raise TypeError(f"ModelDrafter wraps a causal language model (a transformers model), got {type(model).__name__}")
        self.model = model
        self.name = name or getattr(model, "drafter_name", None) or "draft model"
        self.cache = None

    def start(self, prompt_ids, *, max_length, use_cache=True, cache_kind="dynamic"):
        if cache_kind not in CACHE_KINDS:
            raise ValueError(f"unknown cache_kind {cache_kind!r}: use one of {', '.join(map(repr, CACHE_KINDS))}")
        self.cache = new_cache(self.model, cache_kind, max_length) if use_cache else None

    def propose(self, sequence, tau, *, temperature=0.0, generator=None):
        return draft_tokens(self.model, sequence, tau, temperature=temperature, generator=generator,
                            past_key_values=self.cache)

    def rollback(self, kept):
        if self.cache is not None:  # the last draft token was never fed, so the cache may hold fewer than ``kept``
            rollback(self.cache, min(kept, cache_length(self.cache)))

    def state_length(self):
        return None if self.cache is None else cache_length(self.cache)

    def check_state(self, sequence):
        if self.cache is not None:
            check_cache_matches(self.model, self.cache, sequence)

    @property
    def vocab_size(self):
        return self.model.config.vocab_size

    @property
    def device(self):
        return torch.device(self.model.device)

    @property
    def cost_model(self):
        return self.model


def as_drafter(draft) -> Drafter:
    """``draft`` itself if it is a Drafter; a model wrapped in a ``ModelDrafter``; anything else: a clear error."""
    if isinstance(draft, Drafter):
        return draft
    if isinstance(draft, torch.nn.Module) and hasattr(draft, "config"):
        return ModelDrafter(draft)
    raise TypeError(f"the drafter must be a draft model (a transformers causal LM) or a Drafter from "
                    f"specdec_course.drafters (PromptLookup, TwoLevelDrafter, ...), got {type(draft).__name__}")
