"""The target's own quantized copy as its draft (ML-SpecQD's idea: a training-free draft).

A weight-only quantized copy computes almost the target's function from a fraction of its weight bytes, and on a CPU
decoding one token is bound by reading the weights. Two forms, both with torch's CPU kernels:

* "int4": every linear layer's W in 4 bits, groups of 32 along each row: W ≈ s · (q − 8) + z with one scale s and
  one offset z per group, q ∈ {0 … 15} (``_weight_int4pack_mm_for_cpu``). SmolLM2-135M-Instruct ships as a Q4_1
  GGUF, W = d · q + m per group of 32: exactly this grid with s = d, z = m + 8d. When the target's float32 weights lie
  on such a grid it is recovered exactly. The kernel runs fastest on bfloat16 activations, which round every layer's
  input and output to 8 significant bits: close to the target's function, not equal to it. The output layer (the
  largest, 49,152 × 576) runs in 4 bits too, and its top 8 logits are then recomputed exactly from the target's own
  float32 rows (``RescoredHead``), so a near tie at the top is decided as the target would decide it.
* "int4-exact": the same 4-bit weights with float32 activations, and the output layer (tied to the embedding, Q8_0
  in the GGUF: W = d · q, q ∈ {−127 … 127} per group of 32) split into two 4-bit matrices, q = 16 · hi + lo:
  the target's own function up to float32 rounding, but on many CPUs slower than the float32 target itself.
* "int8": W ≈ s · q per output row, q ∈ {−127 … 127} (``_weight_int8pack_mm``), float32 activations: not the
  target's grid, so close, not exact.

``quantized_copy(target, "auto")`` builds each form, measures on this machine its one-token pass (c against the
target's) and its agreement with the target (teacher-forced greedy, on the target's own answer to a fixed prompt),
and keeps the one the cost model predicts fastest: E[tokens per step] / (1 + τ·c) at its best τ.
"""
from __future__ import annotations

import copy

import torch

from ..perf import clock

GROUP = 32
SCHEMES = ("int4", "int4-exact", "int8")
RESCORED = 8  # logits of the cheap output layer recomputed exactly


def _groups(weight: torch.Tensor, group: int) -> torch.Tensor:
    rows, cols = weight.shape
    if cols % group:
        raise ValueError(f"a {rows}×{cols} weight cannot be cut into groups of {group} along its rows")
    return weight.detach().float().reshape(rows, cols // group, group)


def asymmetric_4bit_grid(weight: torch.Tensor, group: int = GROUP):
    """(q, d, m) with W ≈ d · q + m per group, q ∈ {0 … 15}: m the group's minimum, d its range / 15 (Q4_1's grid).
    Exact when W was de-quantized from such a grid."""
    g = _groups(weight, group)
    low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    d = (high - low) / 15
    q = torch.where(d > 0, (g - low) / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(g)).round().clamp(0, 15)
    return q, d, low


def symmetric_8bit_grid(weight: torch.Tensor, group: int = GROUP):
    """(q, d) with W ≈ d · q per group, q ∈ {−127 … 127}, d = max |W| / 127 (Q8_0's grid)."""
    g = _groups(weight, group)
    d = g.abs().amax(-1, keepdim=True) / 127
    q = torch.where(d > 0, g / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(g)).round().clamp(-127, 127)
    return q, d


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    missing = rows - tensor.shape[0]
    return tensor if missing == 0 else torch.cat([tensor, tensor.new_zeros(missing, *tensor.shape[1:])])


class Int4Linear(torch.nn.Module):
    """y = x · Wᵀ (+ b) with W = Σ over parts of s · (q − 8) + z, each part 4 bits in groups of ``GROUP``."""

    def __init__(self, parts, bias, in_features: int, out_features: int, exact: bool, group: int = GROUP,
                 activations: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.group, self.exact = in_features, out_features, group, exact
        self.activations = activations  # the kernel computes in the activations' dtype: bfloat16 is ~10x faster here
        padded = -(-out_features // 16) * 16  # the kernel packs rows in blocks of 16: pad with zero rows, cut them off
        for i, (q, scale, zero) in enumerate(parts):  # q: (out, in) in 0 … 15; scale, zero: (out, in / group)
            q, scale, zero = (_pad_rows(t, padded) for t in (q.reshape(out_features, in_features), scale, zero))
            self.register_buffer(f"packed{i}", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.to(torch.int32).contiguous(), 1))
            self.register_buffer(f"scales_and_zeros{i}",
                                 torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(activations))
        self.parts = len(parts)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, *, eight_bit: bool = False, group: int = GROUP,
                    activations: torch.dtype = torch.float32) -> "Int4Linear":
        """The 4-bit form of ``linear``; ``eight_bit``: its weight on a symmetric 8-bit grid, as two 4-bit parts.
        ``activations``: float32 (the product exact up to float32 rounding) or bfloat16 (inputs, scales and outputs
        rounded to bfloat16's 8 significant bits; much faster on CPUs)."""
        weight = linear.weight.detach().float()
        rows, cols = weight.shape
        if eight_bit:
            q, d = symmetric_8bit_grid(weight, group)
            hi = torch.div(q, 16, rounding_mode="floor")          # −8 … 7
            lo = q - 16 * hi                                      # 0 … 15
            parts = [(hi + 8, (16 * d).squeeze(-1), torch.zeros_like(d).squeeze(-1)),   # 16d · (hi + 8 − 8)
                     (lo, d.squeeze(-1), (8 * d).squeeze(-1))]                          # d · (lo − 8) + 8d
            rebuilt = (d * q).reshape(rows, cols)
        else:
            q, d, m = asymmetric_4bit_grid(weight, group)
            parts = [(q, d.squeeze(-1), (m + 8 * d).squeeze(-1))]
            rebuilt = (d * q + m).reshape(rows, cols)
        exact = bool(torch.equal(rebuilt, weight))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(parts, bias, cols, rows, exact, group, activations)

    def forward(self, x):
        # as few tensor operations as possible: in a one-token pass their fixed cost rivals the product's
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(self.activations).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed0, self.group, self.scales_and_zeros0)
        for i in range(1, self.parts):
            y = y + torch.ops.aten._weight_int4pack_mm_for_cpu(flat, getattr(self, f"packed{i}"), self.group,
                                                               getattr(self, f"scales_and_zeros{i}"))
        if y.shape[1] != self.out_features:
            y = y[:, :self.out_features]
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self):
        grid = "8-bit grid in two 4-bit parts" if self.parts == 2 else "4-bit grid"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {grid}, groups of {self.group}, "
                f"exact={self.exact}, {str(self.activations).replace('torch.', '')} activations")


class Int8Linear(torch.nn.Module):
    """y = x · Wᵀ (+ b) with W ≈ s · q, one scale s per output row, q ∈ {−127 … 127}."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scale = (weight.abs().amax(1) / 127).clamp(min=1e-12)
        # (contiguous: the kernel refuses a strided q, as a weight stored column-major gives)
        self.register_buffer("q", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous())
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.exact = bool(torch.equal(self.q.float() * scale[:, None], weight))

    def forward(self, x):
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features).float().contiguous(), self.q, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per row, exact={self.exact}"


class RescoredHead(torch.nn.Module):
    """logits ≈ x · Wᵀ from a 4-bit copy of W (bfloat16 activations), then the ``top`` largest recomputed exactly from W
    itself in float32: the argmax is the exact layer's whenever it lies among the cheap layer's top ``top``."""

    def __init__(self, linear: torch.nn.Linear, top: int = RESCORED):
        super().__init__()
        self.cheap = Int4Linear.from_linear(linear, activations=torch.bfloat16)
        self.weight = linear.weight  # shared with the target (its tied embedding): no copy
        self.bias = linear.bias
        self.top = top
        self.in_features, self.out_features, self.exact = linear.in_features, linear.out_features, True

    def forward(self, x):
        logits = self.cheap(x).to(x.dtype)
        flat, rows = x.reshape(-1, self.in_features), logits.view(-1, self.out_features)
        top = rows.topk(min(self.top, self.out_features), dim=-1).indices                                  # (tokens, top)
        exact = torch.einsum("th,tkh->tk", flat, self.weight.detach()[top])       # the same rows in float32
        if self.bias is not None:
            exact = exact + self.bias.detach()[top]
        rows.scatter_(-1, top, exact)
        return logits

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, 4-bit, top {self.top} rescored in float32"


def _plain_linears(model):
    from ..perf.kernels import _restore_stock

    _restore_stock(model)  # back to nn.Linear everywhere (a oneDNN-packed copy is not needed here)
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear:
                found.append((parent, name, child))
    return found


def quantize_(model, scheme: str = "int4"):
    """Replace, in place, every linear layer of ``model`` by its ``scheme`` form; the output layer (8-bit grid in
    "int4") too. Returns the model; ``model.quantized_exact`` says whether every weight kept its exact value."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}: use one of {', '.join(map(repr, SCHEMES))} or 'auto'")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("the quantized self-draft uses torch's CPU kernels; the model is on "
                         f"{next(model.parameters()).device}: keep it on the CPU")
    linears = _plain_linears(model)  # (back on plain nn.Linear first: the output layer may be a oneDNN module now)
    head = model.get_output_embeddings()
    exact = True
    kept_float = 0
    for parent, name, linear in linears:
        if linear.in_features % GROUP:
            kept_float += 1  # rows that cannot be cut into groups of 32 stay as they are
            continue
        if scheme == "int8":
            new = Int8Linear(linear)
        elif linear is head:
            new = RescoredHead(linear) if scheme == "int4" else Int4Linear.from_linear(linear, eight_bit=True)
        else:
            new = Int4Linear.from_linear(linear, activations=torch.bfloat16 if scheme == "int4" else torch.float32)
        exact = exact and new.exact
        setattr(parent, name, new)
    model.config.tie_word_embeddings = False  # the output layer is its own (quantized) module now
    # exact: every weight on its grid without error (the arithmetic is float32 only in "int4-exact")
    model.quantization_scheme, model.quantized_exact, model.float_layers = scheme, exact, kept_float
    model.kernel_path = f"{scheme} weight-only"
    model.drafter_name = f"quantized self-draft ({scheme})"
    return model


def _copy(target):
    """A copy of ``target``'s modules that shares every tensor with it (no weight is duplicated)."""
    memo = {}
    for module in target.modules():
        for value in list(module._parameters.values()) + list(module._buffers.values()) + list(vars(module).values()):
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value
    tokenizer = getattr(target, "tokenizer", None)
    if tokenizer is not None:
        memo[id(tokenizer)] = tokenizer
    return copy.deepcopy(target, memo)


@torch.no_grad()
def one_token_ms(model, *, prefix_length: int = 64, repeats: int = 5, seed: int = 0) -> float:
    """Median ms of one cached one-token forward pass after ``prefix_length`` random tokens."""
    from ..cache import new_cache

    gen = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, model.config.vocab_size, (1, prefix_length + 1), generator=gen)
    cache = new_cache(model, "dynamic", prefix_length + 1)
    model(prefix[:, :-1], past_key_values=cache, use_cache=True)
    times = []
    for repeat in range(repeats + 1):
        start = clock.now()
        model(prefix[:, -1:], past_key_values=cache, use_cache=True)
        if repeat:
            times.append(1000 * (clock.now() - start))
        cache.crop(-1)
    return sorted(times)[len(times) // 2]


def _make_linear(scheme: str):
    """The function that turns one of the target's linear layers into its ``scheme`` form."""
    def make(linear, role):
        if linear.in_features % GROUP:
            return linear  # rows that cannot be cut into groups of 32 stay as they are
        if scheme == "int8":
            return Int8Linear(linear)
        if role == "head":
            return RescoredHead(linear) if scheme == "int4" else Int4Linear.from_linear(linear, eight_bit=True)
        return Int4Linear.from_linear(linear, activations=torch.bfloat16 if scheme == "int4" else torch.float32)

    return make


def _build(target, scheme: str):
    """The ``scheme`` copy of ``target``: the compact forward pass (``compact.py``) over quantized layers for a
    Llama-family target, else a copy of the transformers model with its linear layers replaced."""
    from .compact import CompactLlama, choose_float_from, supports

    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}: use one of {', '.join(map(repr, SCHEMES))} or 'auto'")
    if torch.device(target.device).type != "cpu":
        raise ValueError(f"the quantized self-draft uses torch's CPU kernels; the target is on {target.device}: "
                         "keep it on the CPU")
    if not supports(target):
        return quantize_(_copy(target), scheme)
    model = CompactLlama(target, _make_linear(scheme))
    if scheme != "int4-exact":  # (the exact form is the target's function already: nothing to gain)
        model.float_from = choose_float_from(model)  # prompts: the target's float weights where they are faster
    layers = [m for name, m in model.named_modules()  # (a rescored head's own 4-bit estimate is not meant to be exact)
              if isinstance(m, (Int4Linear, Int8Linear, RescoredHead)) and not name.startswith("head.")]
    model.quantization_scheme, model.quantized_exact = scheme, all(m.exact for m in layers + [model.head])
    model.float_layers = sum(type(m) is not torch.nn.Linear and not isinstance(m, (Int4Linear, Int8Linear, RescoredHead))
                             for m in model.modules() if hasattr(m, "in_features"))
    model.kernel_path = f"{scheme} weight-only"
    model.drafter_name = f"quantized self-draft ({scheme})"
    model.tokenizer = getattr(target, "tokenizer", None)
    return model.eval()


@torch.no_grad()
def agreement(model, target, sequence: torch.Tensor, start: int) -> float:
    """Teacher-forced greedy agreement: the fraction of positions from ``start`` on where ``model``'s argmax equals the
    target's, both reading ``sequence`` (1, n)."""
    saved = getattr(model, "float_from", None)
    if saved is not None:
        model.float_from = None  # the 4-bit function, not the float one a long pass would use
    try:
        ours = model(sequence).logits[0, start - 1:-1].argmax(-1)
    finally:
        if saved is not None:
            model.float_from = saved
    theirs = target(sequence).logits[0, start - 1:-1].argmax(-1)
    return float((ours == theirs).float().mean())


def calibration_sequence(target, *, new_tokens: int = 48, seed: int = 0) -> tuple[torch.Tensor, int]:
    """A prompt and the target's own greedy answer to it, (1, n), and where the answer starts: the text a draft must
    agree on. The prompt is a fixed question when the target has a chat tokenizer, else random token ids."""
    from ..generation import autoregressive_generate

    tokenizer = getattr(target, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        from ..models import chat_prompt

        prompt = chat_prompt(tokenizer, "Describe how a bicycle turns the rider's effort into motion.")
    else:
        prompt = torch.randint(0, target.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(seed))
    prompt = prompt.to(torch.device(target.device))
    answer = autoregressive_generate(target, prompt, new_tokens).tokens
    return torch.cat([prompt, torch.tensor([answer], device=prompt.device)], dim=1), prompt.shape[1]


def predicted_speedup(alpha: float, c: float, taus=range(1, 9)) -> tuple[float, int]:
    """The cost model's best speedup E[tokens per step] / (1 + τ·c) over τ (verification priced as one target pass),
    with the τ that gives it."""
    from ..perf.cost_model import expected_tokens_per_step

    alpha = min(max(alpha, 0.0), 0.999)
    return max((expected_tokens_per_step(alpha, tau) / (1 + tau * c), tau) for tau in taus)


@torch.no_grad()
def quantized_copy(target, scheme: str = "auto", *, repeats: int = 5, verbose: bool = False):
    """A weight-only quantized copy of ``target`` (the target is left as it was; float tensors are shared with it).

    scheme "int4", "int4-exact" or "int8", or "auto": build each, measure its one-token pass next to the target's
    (c) and its agreement with the target (α) on this machine, and keep the one with the best predicted speedup;
    ``model.scheme_report`` records the measurements.
    """
    if scheme != "auto":
        model = _build(target, scheme)
        model.scheme_report = None
    else:
        candidates = {name: _build(target, name) for name in SCHEMES}
        sequence, start = calibration_sequence(target)
        times = {name: [] for name in ("target",) + SCHEMES}
        for _ in range(2):  # interleaved, so a machine that changes speed affects all alike
            for name in times:
                times[name].append(one_token_ms(target if name == "target" else candidates[name], repeats=repeats))
        report = {}
        for name, candidate in candidates.items():
            c = min(times[name]) / min(times["target"])
            alpha = agreement(candidate, target, sequence, start)
            speedup, tau = predicted_speedup(alpha, c)
            report[name] = {"ms": min(times[name]), "c": c, "agreement": alpha, "predicted": speedup, "tau": tau}
        scheme = max(SCHEMES, key=lambda name: report[name]["predicted"])
        model = candidates[scheme]
        model.scheme_report = {"target_ms": min(times["target"]), **report}
    model.eval()
    if verbose:
        how = "" if model.scheme_report is None else "; " + ", ".join(
            f"{k}: c = {v['c']:.2f}, agreement {v['agreement']:.3f}, predicted {v['predicted']:.2f}x"
            for k, v in model.scheme_report.items() if k != "target_ms")
        print(f"specdec_course: quantized self-draft: {scheme}{how}")
    return model


def quantized_self_draft(target, scheme: str = "auto", *, verbose: bool = False):
    """The target's quantized copy as a drafter (a ``ModelDrafter`` around ``quantized_copy``)."""
    from .base import ModelDrafter

    return ModelDrafter(quantized_copy(target, scheme, verbose=verbose))
