"""Prompt lookup: draft by copying what followed the last few tokens the previous time they occurred.

Summaries, rewrites, code edits and answers that quote their question repeat long stretches of text already in the
context. Find the longest n-gram (n = max_ngram … min_ngram) that ends the sequence and also occurs earlier in it
(the prompt or the output so far); propose the τ tokens that followed its most recent earlier occurrence.
No model runs at all: drafting costs almost nothing (c ≈ 0).

The proposal is deterministic, so its q is one-hot: q(ŷ) = 1. With the greedy rule nothing changes. With the
sampling rule a draft token is accepted with probability min(1, p(ŷ) / 1) = p(ŷ), and after a rejection the
correction is drawn from norm(max(0, p − q)): p with ŷ removed and renormalised. Together those give ŷ with
probability p(ŷ) and every other y with (1 − p(ŷ)) · p(y) / (1 − p(ŷ)) = p(y): the output still follows p exactly.
"""
from __future__ import annotations

import torch

from ..draft import Draft
from .base import Drafter


def find_continuations(tokens: list[int], depth: int, *, max_ngram: int = 3, min_ngram: int = 1):
    """Every earlier occurrence's continuation (up to ``depth`` tokens) of the n-grams ending ``tokens``: the longest n
    first (n from ``max_ngram`` down to ``min_ngram``) and, for each n, the most recent occurrence first."""
    length = len(tokens)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        tail = tokens[length - n:]
        # the most recent match first: the text just written is the likeliest to be continued the same way
        for start in range(length - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                yield tokens[start + n:start + n + depth]


def find_continuation(tokens: list[int], tau: int, *, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Up to ``tau`` tokens that followed the most recent earlier occurrence of the longest n-gram ending ``tokens``
    (the first of ``find_continuations``); [] when no such n-gram occurred before."""
    return next(find_continuations(tokens, tau, max_ngram=max_ngram, min_ngram=min_ngram), [])


def lookup_tree(tokens: list[int], budget: int, depth: int, *, max_ngram: int = 3, min_ngram: int = 1):
    """A token tree of prompt lookup's matches: each earlier occurrence's continuation (``find_continuations`` order) is
    a branch, branches that begin alike share their nodes (a trie), until ``budget`` nodes are used. The first branch
    is exactly what ``find_continuation`` proposes as a chain; the others are the alternatives a chain leaves out."""
    from ..tree import TokenTree

    if budget < 1 or depth < 1:
        raise ValueError(f"budget and depth must be at least 1, got {budget} and {depth}")
    tree = TokenTree()
    for continuation in find_continuations(tokens, depth, max_ngram=max_ngram, min_ngram=min_ngram):
        node = -1
        for token in continuation:
            known = [c for c in tree.children(node) if tree.tokens[c] == token]
            if known:
                node = known[0]
                continue
            if len(tree) == budget:
                break
            node = tree.add(token, node)   # log q 0: a proposal that is certain (one-hot q)
        if len(tree) == budget:
            break
    return tree


class PromptLookup(Drafter):
    """Drafts by n-gram match over the prompt and the output so far (``find_continuation``); one-hot q."""

    def __init__(self, vocab_size: int, *, max_ngram: int = 3, min_ngram: int = 1, device=None):
        for label, value in (("max_ngram", max_ngram), ("min_ngram", min_ngram)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a whole number of at least 1, got {value!r}")
        if min_ngram > max_ngram:
            raise ValueError(f"min_ngram ({min_ngram}) must not exceed max_ngram ({max_ngram})")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be the target's vocabulary size (a whole number), got {vocab_size!r}")
        self._vocab_size = vocab_size
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.name = f"prompt lookup (n ≤ {max_ngram})"
        self._device = torch.device(device or "cpu")  # it runs no model: its q rows live where the target's tokens do

    @classmethod
    def for_model(cls, model, **kwargs) -> "PromptLookup":
        """A prompt lookup drafter for ``model``'s vocabulary, on its device."""
        return cls(model.config.vocab_size, device=kwargs.pop("device", model.device), **kwargs)

    def propose(self, sequence, tau, *, temperature=0.0, generator=None):
        tokens = find_continuation(sequence[0].tolist(), tau, max_ngram=self.max_ngram, min_ngram=self.min_ngram)
        q = torch.zeros(len(tokens), self._vocab_size, device=sequence.device)
        if tokens:
            q[torch.arange(len(tokens), device=q.device), torch.tensor(tokens, device=q.device)] = 1.0  # one-hot: the proposal is certain
        return Draft(tokens=tokens, q=q)

    def propose_tree(self, sequence, budget, *, depth: int = 4):
        """A tree of the matches' continuations (``lookup_tree``), for token-tree decoding."""
        return lookup_tree(sequence[0].tolist(), budget, depth, max_ngram=self.max_ngram, min_ngram=self.min_ngram)

    @property
    def vocab_size(self):
        return self._vocab_size

    @property
    def device(self):
        return self._device
