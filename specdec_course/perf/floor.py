"""The floor under a decoding pass: the bytes it must read, over the memory's bandwidth.

A one-token pass reads every weight of every matrix product once (and the cached keys and values of the context);
however little arithmetic it does, it can go no faster than

    t_floor = bytes read / bandwidth.

``bytes_per_pass`` counts those bytes from the model's own tensors, in the form its kernels read them: a float32
weight 4 bytes per number, a 4-bit one half a byte plus its scales, an embedding table one row, a rescored head its
4-bit copy plus the rows it recomputes. ``copy_bandwidth`` measures the bandwidth torch reaches on this machine by
copying a buffer far larger than the caches (each byte read once and written once).
"""
from __future__ import annotations

import torch

from . import clock


def _nbytes(tensor) -> int:
    try:
        return tensor.nbytes
    except (RuntimeError, NotImplementedError):  # an opaque (e.g. oneDNN-packed) tensor: as many numbers as it packs
        return tensor.numel() * tensor.element_size()


def _key(tensor):
    try:
        return tensor.data_ptr(), _nbytes(tensor)
    except (RuntimeError, NotImplementedError):
        return id(tensor)


def _product_tensors(module) -> tuple[list, list] | None:
    """(tensors a one-token product reads whole, tensors it does not read) for a matrix-product module; None if the
    module is not one."""
    from ..drafters.quantized import Int4Linear, Int8Linear, RescoredHead
    from .kernels import OneDNNLinear

    if isinstance(module, torch.nn.Linear):
        return [module.weight, module.bias], []
    if isinstance(module, OneDNNLinear):
        return [module.packed, module.bias], [module.weight]
    if isinstance(module, Int4Linear):
        parts = [getattr(module, f"{name}{i}") for i in range(module.parts) for name in ("packed", "scales_and_zeros")]
        return parts + [module.bias], []
    if isinstance(module, Int8Linear):
        return [module.q, module.scale, module.bias], []
    if isinstance(module, RescoredHead):  # its 4-bit copy is a module of its own; of W, only the rescored rows
        return [], [module.weight, module.bias]
    return None


def bytes_per_pass(model, context: int = 0) -> int:
    """Bytes a one-token pass of ``model`` reads: its matrix products' weights as stored, its other parameters and
    buffers (norms), one row of each embedding table, and the cached keys and values of ``context`` positions."""
    from ..drafters.quantized import RescoredHead

    seen, total = set(), 0

    def take(tensor, nbytes=None):
        nonlocal total
        if tensor is None or _key(tensor) in seen:
            return
        seen.add(_key(tensor))
        total += _nbytes(tensor) if nbytes is None else nbytes

    skipped = set()
    for module in model.modules():
        found = _product_tensors(module)
        if found is None:
            continue
        for tensor in found[0]:
            take(tensor)
        skipped.update(_key(t) for t in found[1] if t is not None)
        if isinstance(module, RescoredHead):
            row = module.weight[0]
            total += module.top * _nbytes(row)
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    tables += [getattr(model, "embed")] if isinstance(getattr(model, "embed", None), torch.Tensor) else []
    for table in tables:  # one row (a table that is also the output layer was read whole above)
        take(table, _nbytes(table[0]))
    for module in model.modules():
        if _product_tensors(module) is not None:
            continue
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if _key(tensor) not in skipped:
                take(tensor)
    config = getattr(model, "config", None)
    if context and config is not None:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", heads)
        element = next(model.parameters()).element_size()
        total += 2 * config.num_hidden_layers * kv_heads * head_dim * context * element
    return total


@torch.no_grad()
def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s that torch reaches copying a ``megabytes`` buffer into another (bytes read + bytes written, best of
    ``repeats``): the speed at which a pass can read its weights, at best."""
    if megabytes < 1 or repeats < 1:
        raise ValueError(f"megabytes and repeats must be at least 1, got {megabytes} and {repeats}")
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)  # (touch every page once before timing)
    best = float("inf")
    for _ in range(repeats):
        start = clock.now()
        target.copy_(source)
        best = min(best, clock.now() - start)
    return 2 * source.nbytes / best / 1e9


def floor_ms(nbytes: int, gb_per_s: float) -> float:
    """The bandwidth-bound time of a pass that reads ``nbytes``: nbytes / bandwidth, in ms."""
    return 1000 * nbytes / (gb_per_s * 1e9)
