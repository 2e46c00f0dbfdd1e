"""KV caches and their rollback.

A cache holds, for every layer, the keys and values of the tokens a model has already read. After a
verification step the tokens the target rejected must leave the cache again: rolling back to length L
keeps the first L positions and forgets the rest, so no prefix token is ever recomputed.

Two kinds, behind the same three functions (new_cache, cache_length, rollback):
* "dynamic": transformers' DynamicCache; tensors grow with every token, rollback crops them.
* "static": transformers' StaticCache; fixed-size tensors allocated once per layer
  ([batch, kv_heads, max_length, head_dim]); rollback only moves the length counter, and the stale
  entries past it are overwritten by the next tokens (attention never looks past the current position).
  No reallocation, fixed addresses: the form CUDA graphs and torch.compile need.
"""
from __future__ import annotations

import torch

CACHE_KINDS = ("dynamic", "static")


def default_cache_kind(device) -> str:
    """Static on a CUDA GPU (fixed shapes suit it), dynamic elsewhere."""
    return "static" if torch.device(device).type == "cuda" else "dynamic"


def new_cache(model, kind: str = "dynamic", max_length: int | None = None):
    """An empty cache of ``kind`` for ``model`` (a static one needs ``max_length``, the most tokens it will hold)."""
    from transformers import DynamicCache, StaticCache

    if hasattr(model, "new_cache"):  # a model with a cache of its own (drafters.compact): preallocated, rolled back alike
        if kind not in CACHE_KINDS:
            raise ValueError(f"unknown cache kind {kind!r}: use one of {', '.join(map(repr, CACHE_KINDS))}")
        if not max_length or max_length < 1:
            raise ValueError(f"{type(model).__name__} preallocates its cache: give max_length, the most tokens it will hold")
        return model.new_cache(int(max_length))
    if kind == "dynamic":
        return DynamicCache(config=model.config)
    if kind == "static":
        if not max_length or max_length < 1:
            raise ValueError("a static cache needs max_length: the most tokens it will ever hold")
        return StaticCache(config=model.config, max_cache_len=int(max_length))
    raise ValueError(f"unknown cache kind {kind!r}: use one of {', '.join(map(repr, CACHE_KINDS))}")


def is_static(cache) -> bool:
    from transformers import StaticCache

    return isinstance(cache, StaticCache)


def cache_length(cache) -> int:
    """How many tokens the cache holds (0 for no cache)."""
    return 0 if cache is None else int(cache.get_seq_length())


def rollback(cache, length: int) -> None:
    """Forget every cached position from ``length`` on (keep positions 0 .. length-1)."""
    current = cache_length(cache)
    if length < 0 or length > current:
        raise ValueError(f"cannot roll a cache of {current} tokens back to {length}")
    if length == current:
        return
    if is_static(cache):
        for layer in cache.layers:  # the tensors stay where they are: only the counter moves
            layer.cumulative_length.fill_(length)
    else:
        cache.crop(length - current)  # transformers crops by a negative number of tokens to remove


def kv_bytes_per_token(config, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of KV cache per token: 2 (keys and values) × layers × kv_heads × head_dim × bytes per element."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def kv_cache_bytes(config, length: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of KV cache for ``length`` tokens."""
    return kv_bytes_per_token(config, dtype) * length


def allocated_bytes(cache) -> int:
    """Bytes actually held by a cache's key and value tensors."""
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


@torch.no_grad()
def check_cache_matches(model, cache, sequence: torch.Tensor, atol: float = 1e-4) -> None:
    """Debug check: the cache holds exactly the keys/values of ``sequence[:, :length]`` (nothing rejected left behind).
    A model that computes long passes another way than short ones (``tolerance``: a quantized copy whose prompt pass
    uses float weights) is compared at its own tolerance: rounding, far below what a wrong token changes."""
    length = cache_length(cache)
    atol, rtol = getattr(model, "cache_tolerance", None) or (atol, 1e-3)
    if length > sequence.shape[1]:
        raise AssertionError(f"cache holds {length} tokens but only {sequence.shape[1]} exist")
    if length == 0:
        return
    fresh = new_cache(model, "dynamic", length)
    model(sequence[:, :length], past_key_values=fresh, use_cache=True)
    for index in (0, len(cache.layers) - 1):
        ours = cache.layers[index].keys[:, :, :length]
        theirs = fresh.layers[index].keys[:, :, :length]
        if not torch.allclose(ours.float(), theirs.float(), atol=atol, rtol=rtol):
            raise AssertionError(f"layer {index}: cached keys differ from the keys of the kept tokens")
