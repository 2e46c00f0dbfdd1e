"""KV caches and their rollback.

A cache holds, for every layer, the keys and values of the tokens a model has already read. After a
verification step the tokens the target rejected must leave the cache again: rolling back to length L
keeps the first L positions and forgets the rest, so no prefix token is ever recomputed.
"""
from __future__ import annotations


def new_cache(model):
    """An empty transformers DynamicCache for ``model``."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def cache_length(cache) -> int:
    """How many tokens the cache holds (0 for no cache)."""
    return 0 if cache is None else int(cache.get_seq_length())


def rollback(cache, length: int) -> None:
    """Forget every cached position from ``length`` on (keep positions 0 .. length-1)."""
    current = cache_length(cache)
    if length < 0 or length > current:
        raise ValueError(f"cannot roll a cache of {current} tokens back to {length}")
    if length < current:
        cache.crop(length - current)  # transformers crops by a negative number of tokens to remove
