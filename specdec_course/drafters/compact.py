"""A Llama decoder written out in plain tensor operations, over linear layers of any kind.

For a one-token pass of a 135M-parameter model, transformers' general machinery (masks, cache objects, hooks, many
small modules) costs about as much time on a CPU as the matrix products themselves once the weights are in 4 bits.
A draft must be cheap, so the quantized self-draft runs the target's own layers through this compact forward pass:
the same function (RMSNorm, rotary positions, grouped-query attention, SiLU-gated MLP), with q, k, v fused into one
product and gate and up into another, and a KV cache that is two preallocated tensors per layer and a length.

    h = embed(x)
    for each layer:  h = h + o(attention(rope(q), rope(k), v))   where q, k, v = split(qkv(rmsnorm(h)))
                                                                  (q, k rows reordered: rope is one complex product)
                     h = h + down(silu(gate) · up)                where gate, up = split(gate_up(rmsnorm(h)))
    logits = head(rmsnorm(h))

A pass over many tokens at once (the prompt) is another matter: the 4-bit kernels dequantize the weights again for every
row, while the float32 product reads them once for all rows, so past some number of rows the target's own float
weights are faster. ``float_from`` (None: never) is that number, measured by ``choose_float_from``; such passes run the
target's own linear layers (shared, not copied) and leave the draft's keys and values a little closer to the target's.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

SUPPORTED = ("llama",)


def supports(model) -> bool:
    """True when ``model`` is a transformers Llama-family causal LM whose forward pass this module reproduces."""
    config = getattr(model, "config", None)
    rope = (getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}) if config else {}
    return (getattr(config, "model_type", None) in SUPPORTED and rope.get("rope_type", "default") == "default"
            and getattr(config, "hidden_act", "silu") == "silu" and hasattr(model, "model"))


def _fused(*linears: torch.nn.Linear, order=None) -> torch.nn.Linear:
    """One nn.Linear whose output is the outputs of ``linears`` side by side (their weight rows stacked), its rows
    taken in ``order`` when given."""
    weight = torch.cat([l.weight.detach() for l in linears])
    bias = None if linears[0].bias is None else torch.cat([l.bias.detach() for l in linears])
    if order is not None:
        weight, bias = weight[order], None if bias is None else bias[order]
    fused = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    fused.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        fused.bias = torch.nn.Parameter(bias, requires_grad=False)
    return fused


class CompactCache:
    """Keys and values of every layer in two preallocated tensors, (layers, kv_heads, capacity, head_dim), and the
    number of positions filled. Rolling back only moves the length (``crop``, as transformers' caches)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype=torch.float32, device="cpu"):
        self.keys = torch.zeros(layers, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens: int) -> None:
        """Keep the first ``tokens`` positions; a negative number removes that many from the end."""
        self.length = max(self.length + tokens, 0) if tokens < 0 else min(tokens, self.length)

    @property
    def layers(self):
        """Per layer, the filled keys and values as (1, kv_heads, length, head_dim), like transformers' cache layers."""
        n = self.length
        return [SimpleNamespace(keys=self.keys[i, None, :, :n], values=self.values[i, None, :, :n])
                for i in range(self.keys.shape[0])]


class CompactLlama(torch.nn.Module):
    """The forward pass of a transformers Llama model, with its linear layers turned by ``make_linear(linear, role)``
    (role "qkv", "o", "gate_up", "down" or "head") into whatever modules compute them (quantized ones, say).
    Norm weights, the embedding and the rotary frequencies are the model's own tensors (shared, not copied)."""

    def __init__(self, model, make_linear):
        super().__init__()
        if not supports(model):
            raise ValueError(f"the compact forward pass reproduces Llama-family models with default rotary positions; "
                             f"this one is {getattr(model.config, 'model_type', type(model).__name__)!r}")
        config = model.config
        self.config = config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.inv_freq = inner.rotary_emb.inv_freq
        self.rope_scaling = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))
        self.final_norm = inner.norm.weight
        # Rotary positions turn each pair (x_i, x_{i+d/2}) of a head's d dimensions by an angle. Reordering the rows
        # of q and k so each pair lies side by side makes the turn one complex multiplication; attention scores are
        # dot products of q and k, which the same reordering of both leaves unchanged (v keeps its order).
        half = self.head_dim // 2
        pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)   # 0, d/2, 1, d/2+1, …
        qk_heads = self.heads + self.kv_heads
        order = torch.cat([(torch.arange(qk_heads)[:, None] * self.head_dim + pairs).reshape(-1),
                           torch.arange(qk_heads * self.head_dim, (qk_heads + self.kv_heads) * self.head_dim)])
        self.layers = torch.nn.ModuleList()
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            block = torch.nn.Module()
            block.qkv = make_linear(_fused(attn.q_proj, attn.k_proj, attn.v_proj, order=order), "qkv")
            block.o = make_linear(attn.o_proj, "o")
            block.gate_up = make_linear(_fused(mlp.gate_proj, mlp.up_proj), "gate_up")
            block.down = make_linear(mlp.down_proj, "down")
            block.in_norm, block.post_norm = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
            self.layers.append(block)
        self.head = make_linear(model.get_output_embeddings(), "head")
        self.intermediate = config.intermediate_size
        self.qkv_order = order
        # the model's own linear layers, for passes over many tokens; kept out of the module tree (shared, not copied)
        self.__dict__["float_source"] = SimpleNamespace(
            layers=[SimpleNamespace(q=l.self_attn.q_proj, k=l.self_attn.k_proj, v=l.self_attn.v_proj, o=l.self_attn.o_proj,
                                    gate=l.mlp.gate_proj, up=l.mlp.up_proj, down=l.mlp.down_proj) for l in inner.layers],
            head=model.get_output_embeddings())
        self.float_from = None  # passes over this many tokens or more use the float weights (None: never)

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def get_output_embeddings(self):
        return self.head

    @property
    def cache_tolerance(self):
        """(atol, rtol) for comparing cached keys with a recomputation: bfloat16 rounding when long passes use the float
        weights and short ones the 4-bit kernels (a key of a wrong token differs by far more)."""
        return None if self.float_from is None else (5e-2, 5e-2)

    def new_cache(self, max_length: int) -> CompactCache:
        return CompactCache(len(self.layers), self.kv_heads, self.head_dim, max_length, self.embed.dtype, self.embed.device)

    def _norm(self, x, weight):
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def forward(self, input_ids: torch.Tensor, past_key_values: CompactCache | None = None, use_cache: bool = False,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None, **unused):
        """Logits (1, k, vocab) for the k new tokens ``input_ids`` (1, k) after the cache's positions. By default new
        token i sees every cached position and new tokens 0 … i, at position start + i; a token tree passes its own
        ``attention_mask`` (1, 1, k, start + k), additive as transformers takes it, and ``position_ids`` (1, k)."""
        k = input_ids.shape[1]
        cache = past_key_values if past_key_values is not None else self.new_cache(k)
        start = cache.length
        if start + k > cache.keys.shape[2]:
            raise ValueError(f"the cache holds at most {cache.keys.shape[2]} positions; {start} + {k} asked for")
        if position_ids is not None:
            positions = position_ids.reshape(-1).to(device=input_ids.device, dtype=torch.float32)
        else:
            positions = torch.arange(start, start + k, device=input_ids.device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq[None, :].float()
        turn = torch.polar(torch.full_like(angles, self.rope_scaling), angles)[:, None]   # (k, 1, d/2) e^{iθ}
        mask = None
        if attention_mask is not None:
            if attention_mask.dim() != 4 or attention_mask.shape[-1] < start + k:
                raise ValueError("the compact forward pass takes a 4D attention mask (1, 1, k, cached + k), as a token "
                                 f"tree gives; got shape {tuple(attention_mask.shape)}")
            mask = attention_mask[0, 0, :, :start + k]
            mask = mask if mask.dtype == torch.bool else mask == 0   # additive: 0 where a token may attend
        elif k > 1:  # new token i sees every cached position and new tokens 0 … i
            mask = torch.ones(k, start + k, dtype=torch.bool, device=input_ids.device).tril(diagonal=start)
        h = F.embedding(input_ids[0], self.embed)                         # (k, hidden)
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        use_float = self.float_from is not None and k >= self.float_from
        for index, block in enumerate(self.layers):
            if use_float:
                block = self._float_block(index)
            qk, value = block.qkv(self._norm(h, block.in_norm)).split([q_size + kv_size, kv_size], dim=-1)
            qk = qk.reshape(k, self.heads + self.kv_heads, self.head_dim // 2, 2)
            qk = torch.view_as_real(torch.view_as_complex(qk.float()) * turn).to(h.dtype).view(k, -1, self.head_dim)
            q, key = qk.transpose(0, 1).split([self.heads, self.kv_heads])
            cache.keys[index, :, start:start + k] = key
            cache.values[index, :, start:start + k] = value.view(k, self.kv_heads, self.head_dim).transpose(0, 1)
            attended = F.scaled_dot_product_attention(
                q[None], cache.keys[index, None, :, :start + k], cache.values[index, None, :, :start + k],
                attn_mask=mask, enable_gqa=True)                       # (1, heads, k, head_dim)
            h = h + block.o(attended[0].transpose(0, 1).reshape(k, q_size))
            gate, up = block.gate_up(self._norm(h, block.post_norm)).split([self.intermediate, self.intermediate], dim=-1)
            h = h + block.down(F.silu(gate) * up)
        cache.length = start + k
        logits = (self.float_source.head if use_float else self.head)(self._norm(h, self.final_norm))
        return SimpleNamespace(logits=logits[None].float())

    def _float_block(self, index: int) -> SimpleNamespace:
        """Layer ``index`` computed with the model's own float linear layers, in the compact layout."""
        source, block = self.float_source.layers[index], self.layers[index]
        return SimpleNamespace(
            qkv=lambda x: torch.cat([source.q(x), source.k(x), source.v(x)], dim=-1)[..., self.qkv_order],
            o=source.o, gate_up=lambda x: torch.cat([source.gate(x), source.up(x)], dim=-1), down=source.down,
            in_norm=block.in_norm, post_norm=block.post_norm)


@torch.no_grad()
def choose_float_from(model: CompactLlama, candidates=(4, 8, 16, 32, 64), repeats: int = 2):
    """The fewest tokens for which a pass with the float weights is faster than the 4-bit pass on this machine (None
    when it never is among ``candidates``): each size timed both ways, alternately, best of ``repeats``."""
    from ..perf import clock

    saved = model.float_from
    try:
        for k in candidates:
            ids = torch.zeros(1, k, dtype=torch.long, device=model.device)
            best = {}
            for _ in range(repeats):
                for float_from in (None, k):
                    model.float_from = float_from
                    start = clock.now()
                    model(ids)
                    best[float_from] = min(best.get(float_from, float("inf")), clock.now() - start)
            if best[k] < best[None]:
                return k
        return None
    finally:
        model.float_from = saved
