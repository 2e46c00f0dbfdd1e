"""A draft head that reads the target's own features (the idea of EAGLE, Li et al. 2024).

The target's feature f_j is what its output layer reads at position j (its last hidden state, after the final norm):
logits_j = W · f_j. A draft model must rebuild everything from tokens; a head is handed f_j by the target's own
verification pass and needs to learn only one step further:

    x_j = fc([embed(t_j); f_{j-1}])                  the token at j and the feature before it
    g_j = norm(layer(x_{≤j}))                        one causal decoder layer (its own KV cache)
    q(· | t_≤j) = softmax(W_K · g_j)                 the target's output rows for K frequent tokens (shared, frozen)

g_j is the head's guess of f_j. To draft τ tokens after a sequence whose features are known up to j − 1, the head reads
(f_{j-1}, t_j) and proposes t̂_{j+1}; then (g_j, t̂_{j+1}) for t̂_{j+2}, and so on: deeper draft positions stand on the
head's own guesses. Training-time test trains it exactly so: at depth d the input feature is the head's own output
from depth d − 1, and each position attends to the true-feature positions up to d − 1 back and to its own chain,
as it will when drafting. The target's embedding and output rows are shared with the target, never stored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..draft import Draft, distribution
from ..tree import DEFAULT_LEVELS, TokenTree, grow_levels, tree_mask, tree_positions
from .base import Drafter

PACKAGE = Path(__file__).resolve().parent.parent
HEAD_DIR = PACKAGE / "head"  # the shipped head
FORMAT = "specdec-course feature head"


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary positions on x (..., n, head_dim) at ``positions`` (n,)."""
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


class HeadCache:
    """The head's keys and values, (kv_heads, capacity, head_dim) each, and how many positions are filled."""

    def __init__(self, kv_heads: int, head_dim: int, capacity: int, device="cpu"):
        self.keys = torch.zeros(kv_heads, capacity, head_dim, device=device)
        self.values = torch.zeros_like(self.keys)
        self.length = 0


class FeatureHead(torch.nn.Module):
    """fc over [embedding; feature] → one Llama decoder layer → norm → the target's output rows for ``token_ids``.

    Build it with ``FeatureHead.for_target(target, token_ids)``; the embedding and output rows are the target's
    (attached, not parameters of the head)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, intermediate: int, token_ids: torch.Tensor,
                 vocab_size: int, *, rope_theta: float = 10000.0, eps: float = 1e-5):
        super().__init__()
        if hidden % heads or heads % kv_heads:
            raise ValueError(f"hidden {hidden} must divide into {heads} heads, and heads into {kv_heads} key-value heads")
        self.hidden, self.heads, self.kv_heads, self.intermediate = hidden, heads, kv_heads, intermediate
        self.head_dim, self.eps, self.vocab_size, self.rope_theta = hidden // heads, eps, vocab_size, rope_theta
        linear = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.fc = linear(2 * hidden, hidden)
        self.in_norm = torch.nn.Parameter(torch.ones(hidden))
        self.qkv = linear(hidden, (heads + 2 * kv_heads) * self.head_dim)
        self.o = linear(heads * self.head_dim, hidden)
        self.post_norm = torch.nn.Parameter(torch.ones(hidden))
        self.gate_up = linear(hidden, 2 * intermediate)
        self.down = linear(intermediate, hidden)
        self.out_norm = torch.nn.Parameter(torch.ones(hidden))
        self.register_buffer("token_ids", torch.as_tensor(token_ids).long().clone(), persistent=False)
        self.register_buffer("inv_freq", 1.0 / rope_theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim),
                             persistent=False)
        self.embed = self.out_rows = None  # the target's, set by attach()

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_target(cls, target, token_ids=None, *, seed: int = 0) -> "FeatureHead":
        """A head shaped like one of ``target``'s layers, over the output rows of ``token_ids`` (default: all tokens).
        The layer starts from the target's last decoder layer, fc from small random weights
        (so its first drafts are unsure rather than confidently wrong)."""
        config = target.config
        vocab = config.vocab_size
        token_ids = torch.arange(vocab) if token_ids is None else torch.as_tensor(token_ids)
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = cls(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                       config.intermediate_size, token_ids, vocab, rope_theta=theta, eps=config.rms_norm_eps)
            last = target.model.layers[-1]
            attn, mlp = last.self_attn, last.mlp
            with torch.no_grad():
                head.qkv.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).float())
                head.o.weight.copy_(attn.o_proj.weight.float())
                head.gate_up.weight.copy_(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).float())
                head.down.weight.copy_(mlp.down_proj.weight.float())
                head.in_norm.copy_(last.input_layernorm.weight.float())
                head.post_norm.copy_(last.post_attention_layernorm.weight.float())
                head.out_norm.copy_(target.model.norm.weight.float())
                head.fc.weight.normal_(0, 0.02)
        return head.attach(target)

    def attach(self, target) -> "FeatureHead":
        """Use ``target``'s token embedding and output rows (float32, frozen, shared with the target); the head moves to
        the target's device."""
        if target.config.vocab_size != self.vocab_size or target.config.hidden_size != self.hidden:
            raise ValueError(f"this head was made for a target with {self.vocab_size} tokens of width {self.hidden}; "
                             f"this target has {target.config.vocab_size} of width {target.config.hidden_size}")
        from ..perf.kernels import _output_linear

        embed = target.get_input_embeddings().weight.detach()
        self.to(embed.device)  # its own layers and buffers where the target's features will be
        out = _output_linear(target).weight.detach()  # rows by token id (column-major storage reads the same)
        if out.shape != (self.vocab_size, self.hidden):
            raise ValueError(f"the target's output layer has shape {tuple(out.shape)}; a feature head needs all "
                             f"{self.vocab_size} output rows of width {self.hidden}")
        self.embed = embed.float() if embed.dtype != torch.float32 else embed
        self.out_rows = out.float()[self.token_ids.to(out.device)].contiguous()
        return self

    def save(self, folder) -> Path:
        """Write the head's own weights (not the target's rows) and its shape to ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in self.state_dict().items()},
                  str(folder / "head.safetensors"))
        save_file({"token_ids": self.token_ids.to(torch.int32)}, str(folder / "token_ids.safetensors"))
        (folder / "config.json").write_text(json.dumps({
            "format": FORMAT, "hidden": self.hidden, "heads": self.heads, "kv_heads": self.kv_heads,
            "intermediate": self.intermediate, "vocab_size": self.vocab_size, "rope_theta": self.rope_theta,
            "eps": self.eps, "subset": len(self.token_ids)}, indent=1))
        return folder

    @classmethod
    def load(cls, folder, target) -> "FeatureHead":
        from safetensors.torch import load_file

        folder = Path(folder)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no feature head in {folder}: train one with `python -m specdec_course.distill head`")
        config = json.loads(config_file.read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{config_file} is not a {FORMAT} (format {config.get('format')!r})")
        token_ids = load_file(str(folder / "token_ids.safetensors"))["token_ids"]
        head = cls(config["hidden"], config["heads"], config["kv_heads"], config["intermediate"], token_ids,
                   config["vocab_size"], rope_theta=config["rope_theta"], eps=config["eps"])
        head.load_state_dict({k: v.float() for k, v in load_file(str(folder / "head.safetensors")).items()})
        return head.eval().attach(target)

    # ------------------------------------------------------------------ the forward pass
    def inputs(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x_j = fc([embed(t_j); f_{j-1}]): row r pairs ``tokens[r]`` with ``features[r]``, the feature one position back."""
        return self.fc(torch.cat([F.embedding(tokens, self.embed), features.float()], dim=-1))

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        n = x.shape[0]
        q, k, v = self.qkv(_rms_norm(x, self.in_norm, self.eps)).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        q = _rope(q.view(n, self.heads, self.head_dim).transpose(0, 1), positions, self.inv_freq)
        k = _rope(k.view(n, self.kv_heads, self.head_dim).transpose(0, 1), positions, self.inv_freq)
        return q, k, v.view(n, self.kv_heads, self.head_dim).transpose(0, 1)

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the layer after attention; returns g = norm(h), the head's guess of the feature."""
        h = x + self.o(attended.transpose(0, 1).reshape(x.shape[0], -1))
        gate, up = self.gate_up(_rms_norm(h, self.post_norm, self.eps)).chunk(2, dim=-1)
        h = h + self.down(F.silu(gate) * up)
        return _rms_norm(h, self.out_norm, self.eps)

    def subset_logits(self, g: torch.Tensor) -> torch.Tensor:
        """W_K · g: logits over the K tokens of ``token_ids`` (in that order)."""
        return g @ self.out_rows.T

    def step(self, features: torch.Tensor, tokens: torch.Tensor, cache: HeadCache, first_position: int) -> torch.Tensor:
        """Feed rows (f_{j-1}, t_j) for positions j = first_position … after the cache's entries; returns g, (n, hidden)."""
        return self.layer(self.inputs(features, tokens), cache, first_position)

    def step_rows(self, features: torch.Tensor, tokens: torch.Tensor, cache: HeadCache, positions: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """``step`` for rows at any ``positions`` with any ``mask`` over the cache and themselves (a token tree's)."""
        return self.layer(self.inputs(features, tokens), cache, positions=positions, mask=mask)

    def layer(self, x: torch.Tensor, cache: HeadCache | None = None, first_position: int = 1, *,
              positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder layer over rows x (n, hidden) at positions first_position …, each row seeing the cache's entries
        and the rows before it; returns g = norm(h), (n, hidden). Without a cache: a causal pass over x alone.
        A token tree's rows give their own ``positions`` (n,) and ``mask`` (n, cached + n; True: may attend)."""
        n = x.shape[0]
        cache = cache if cache is not None else self.new_cache(n)
        if positions is None:
            positions = torch.arange(first_position, first_position + n, device=x.device)
        q, k, v = self._qkv(x, positions.to(x.device))
        start = cache.length
        if start + n > cache.keys.shape[1]:
            raise ValueError(f"the head's cache holds at most {cache.keys.shape[1]} positions; {start} + {n} asked for")
        cache.keys[:, start:start + n], cache.values[:, start:start + n] = k, v
        cache.length = start + n
        if mask is not None:
            mask = mask.to(x.device)
        elif n > 1:
            mask = torch.ones(n, start + n, dtype=torch.bool, device=x.device).tril(diagonal=start)
        attended = F.scaled_dot_product_attention(q[None], cache.keys[None, :, :start + n], cache.values[None, :, :start + n],
                                                  attn_mask=mask, enable_gqa=True)[0]
        return self._finish(x, attended)

    def training_logits(self, features: torch.Tensor, tokens: torch.Tensor, depth: int = 1) -> list[torch.Tensor]:
        """Training-time test over one sequence: subset logits at every row for depths 1 … ``depth``.

        Row i stands for position j = i + 1: depth 1 reads (f_i, t_{i+1}) (``features`` (n, hidden) are f_0 … f_{n-1},
        ``tokens`` (n,) are t_1 … t_n); depth d reads (g^{d-1}_{i-1}, t_{i+1}), the head's own guess one position back,
        and attends to depth 1 at rows ≤ i − d + 1 and to depth k at row i − d + k (k = 2 … d): the keys a drafting head
        has at its (d−1)-th own guess. Rows i < d − 1 of depth d have no such chain and are left out (logits of row
        0 … d − 2 are meaningless)."""
        n = tokens.shape[0]
        positions = torch.arange(1, n + 1, device=tokens.device)
        rows = torch.arange(n, device=tokens.device)
        group = self.heads // self.kv_heads
        scale = 1.0 / math.sqrt(self.head_dim)
        keys, values, out = [], [], []
        feature_in = features
        for d in range(1, depth + 1):
            x = self.inputs(feature_in, tokens)
            q, k, v = self._qkv(x, positions)
            keys.append(k.repeat_interleave(group, 0))
            values.append(v.repeat_interleave(group, 0))
            allowed = rows[None, :] <= rows[:, None] - (d - 1)                       # true-feature keys: up to d − 1 back
            scores = [(q @ keys[0].transpose(1, 2) * scale).masked_fill(~allowed, float("-inf"))]
            chain_values = []
            for level in range(2, d + 1):                                          # own chain: depth `level` at i − d + level
                back = d - level
                k_l = torch.roll(keys[level - 1], back, dims=1)
                scores.append((q * k_l).sum(-1, keepdim=True) * scale)
                chain_values.append(torch.roll(values[level - 1], back, dims=1))
            weights = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
            attended = weights[..., :n] @ values[0]
            for index, v_l in enumerate(chain_values):
                attended = attended + weights[..., n + index: n + index + 1] * v_l
            g = self._finish(x, attended)
            out.append(self.subset_logits(g))
            feature_in = torch.cat([torch.zeros_like(g[:1]), g[:-1]])              # g^{d}_{i-1} for the next depth
        return out

    def new_cache(self, capacity: int) -> HeadCache:
        return HeadCache(self.kv_heads, self.head_dim, capacity, device=self.fc.weight.device)


def training_loss(head: FeatureHead, features: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor, *,
                  depth: int = 3, weights: torch.Tensor | None = None, decay: float = 0.8) -> tuple[torch.Tensor, list[float]]:
    """Cross-entropy of the head's subset logits against the target's argmax labels, summed over depths with weight
    decay^(d−1). ``labels`` (n,) are positions in the head's token subset (−100: not in it, left out), label i for
    row i (the target's argmax after t_{i+1}); ``weights`` (n,) weigh rows (say prompt rows less). Returns the loss and
    each depth's accuracy."""
    logits = head.training_logits(features, tokens, depth)
    weights = torch.ones(tokens.shape[0], device=tokens.device) if weights is None else weights
    total, accuracy = 0.0, []
    for d, lg in enumerate(logits, start=1):
        valid = (labels >= 0) & (torch.arange(len(labels), device=labels.device) >= d - 1) & (weights > 0)
        if not valid.any():
            accuracy.append(float("nan"))
            continue
        ce = F.cross_entropy(lg[valid], labels[valid], reduction="none")
        w = weights[valid]
        total = total + decay ** (d - 1) * (ce * w).sum() / w.sum()
        accuracy.append(float((lg[valid].argmax(-1) == labels[valid]).float().mean()))
    return total, accuracy


class FeatureHeadDrafter(Drafter):
    """Drafts with a ``FeatureHead`` from the target's features, which verification hands it (``observe_features``).

    Its state: the features of the kept positions, and the head's cache of true-feature entries (positions 1 … m).
    Drafted entries stand on the head's own guesses, so after every step they are dropped and the accepted positions
    are fed again with the target's real features. On the first step it knows no feature yet and proposes nothing."""

    name = "feature head"
    wants_features = True
    grows_by_levels = True  # its trees grow a level at a time: tree_generate hands propose_tree top_k and levels

    def __init__(self, target, head: FeatureHead):
        self.target, self.head = target, head
        self.features = None
        self.known = 0       # positions 0 … known − 1 have the target's features
        self.cache = None
        self.use_cache = True
        self.capacity = 0
        self.true_entries = 0  # cache entries fed with the target's real features (positions 1 … true_entries)

    def start(self, prompt_ids, *, max_length, use_cache=True, cache_kind="dynamic"):
        self.capacity = max_length + 1
        self.features = torch.zeros(self.capacity, self.head.hidden, device=self.device)
        self.known, self.use_cache, self.true_entries = 0, use_cache, 0
        self.cache = self.head.new_cache(self.capacity)

    def observe_features(self, features: torch.Tensor, first_position: int) -> None:
        """The target's features of positions first_position … (rows of its verification pass)."""
        rows = features.reshape(-1, features.shape[-1])
        self.features[first_position:first_position + rows.shape[0]] = rows.float()
        self.known = first_position + rows.shape[0]  # the rows past the kept ones are dropped by rollback

    def _ready(self, sequence) -> bool:
        """Whether the target's features are known up to the position before the last (so the head can guess on)."""
        return self.known >= max(sequence.shape[1] - 1, 1)

    def _read_prefix(self, sequence) -> torch.Tensor:
        """Feed the positions the head's cache has not seen, with the target's real features; returns g (1, hidden), the
        head's guess of the last position's feature."""
        if not self.use_cache:
            self.cache = self.head.new_cache(self.capacity)
        length = sequence.shape[1]
        first = self.cache.length + 1              # next position fed with a real feature
        g = self.head.step(self.features[first - 1:length - 1], sequence[0, first:length], self.cache, first)[-1:]
        self.true_entries = self.cache.length
        return g

    def _logits(self, g: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary (rows of g; −inf outside the head's token subset)."""
        logits = torch.full((g.shape[0], self.head.vocab_size), float("-inf"), device=g.device)
        logits[:, self.head.token_ids] = self.head.subset_logits(g)
        return logits

    @torch.no_grad()
    def propose(self, sequence, tau, *, temperature=0.0, generator=None):
        length = sequence.shape[1]
        vocab = self.head.vocab_size
        if not self._ready(sequence) or tau == 0:  # the features up to the last position are not known yet
            return Draft(tokens=[], q=torch.empty(0, vocab, device=sequence.device))
        g = self._read_prefix(sequence)
        drafted, rows = [], []
        for t in range(tau):
            q = distribution(self._logits(g)[0], temperature)
            token = int(torch.multinomial(q.cpu(), 1, generator=generator)) if temperature > 0 else int(torch.argmax(q))
            drafted.append(token)
            rows.append(q)
            if t + 1 < tau:  # the next guess reads this guess of the feature and the drafted token
                g = self.head.step(g, torch.tensor([token], device=g.device), self.cache, length + t)
        return Draft(tokens=drafted, q=torch.stack(rows))

    @torch.no_grad()
    def propose_tree(self, sequence, budget, *, top_k: int = 4, levels: int | None = None,
                     width: int | None = None) -> TokenTree:
        """A dynamic tree grown a level at a time (``tree.grow_levels``): the root's children from the head's guess of
        the last position's feature; each level's chosen nodes fed together in one head pass, each row (its parent's
        guessed feature, its token) at the position its depth gives it, seeing the true entries and its own ancestors
        (the tree mask): ``levels`` head passes per tree (default ``DEFAULT_LEVELS``), the first over the new true
        positions.
        The head's cache is left holding the true entries only. Before any feature is known: an empty tree."""
        if not self._ready(sequence):
            return TokenTree()
        length = sequence.shape[1]
        g_root = self._read_prefix(sequence)
        true = self.cache.length
        guesses = {-1: g_root[0]}  # node -> the head's guess of the target's feature at that node

        def expand(expanded: TokenTree, fresh: list[int]) -> torch.Tensor:
            features = torch.stack([guesses[expanded.parents[i]] for i in fresh])
            tokens = torch.tensor([expanded.tokens[i] for i in fresh], device=features.device)
            g = self.head.step_rows(features, tokens, self.cache, tree_positions(expanded.parents, length)[fresh],
                                    tree_mask(expanded.parents, true)[fresh])
            guesses.update(zip(fresh, g))
            return torch.log_softmax(self._logits(g), dim=-1)

        try:
            return grow_levels(torch.log_softmax(self._logits(g_root)[0], dim=-1), expand, budget, top_k=top_k,
                               width=width, depth=levels or DEFAULT_LEVELS)
        finally:
            self.cache.length = true  # the nodes' entries stand on guesses: dropped

    def rollback(self, kept):
        self.known = min(self.known, kept)
        if self.cache is not None:
            self.cache.length = min(self.cache.length, self.true_entries, max(kept - 1, 0))

    def state_length(self):
        if self.cache is None:
            return None
        return self.cache.length + 1 if self.cache.length else 0  # entries for positions 1 … m describe m + 1 tokens

    def check_state(self, sequence):
        """The head's cache equals a fresh pass over the stored features of the positions it holds."""
        n = self.cache.length
        if n == 0:
            return
        fresh = self.head.new_cache(n)
        self.head.step(self.features[:n], sequence[0, 1:n + 1], fresh, 1)
        for name, a, b in (("keys", self.cache.keys[:, :n], fresh.keys), ("values", self.cache.values[:, :n], fresh.values)):
            if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
                raise AssertionError(f"the feature head's cached {name} differ from recomputation by "
                                     f"{(a - b).abs().max().item():.2e}")

    @property
    def vocab_size(self):
        return self.head.vocab_size

    @property
    def device(self):
        return self.head.fc.weight.device

    @property
    def cost_model(self):
        return None


def load_feature_head(target, folder=None) -> FeatureHeadDrafter:
    """The shipped feature head (or one trained by ``python -m specdec_course.distill head --out folder``) as a drafter."""
    return FeatureHeadDrafter(target, FeatureHead.load(folder or HEAD_DIR, target))


# ---------------------------------------------------------------------------------------------- training
@torch.no_grad()
def target_features(target, sequences: list[torch.Tensor], *, batch_size: int = 8, dtype=torch.float16):
    """For each sequence: the target's features f_0 … f_{n-1} ((n, hidden), stored in ``dtype``) and its argmax labels
    (n,), from one batched pass (right-padded: causal attention keeps padding from changing earlier rows)."""
    from ..verify import output_layer_inputs

    features, labels = [], []
    with output_layer_inputs(target) as read:
        for start in range(0, len(sequences), batch_size):
            batch = [s.long().reshape(-1) for s in sequences[start:start + batch_size]]
            width = max(len(s) for s in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, s in enumerate(batch):
                ids[row, :len(s)], mask[row, :len(s)] = s, 1
            read.clear()
            logits = target(ids.to(target.device), attention_mask=mask.to(target.device)).logits
            for row, s in enumerate(batch):
                features.append(read[-1][row, :len(s)].to("cpu", dtype))
                labels.append(logits[row, :len(s)].argmax(-1).cpu().to(torch.int32))
    return features, labels


def train_head(head: FeatureHead, features: list[torch.Tensor], sequences: list[torch.Tensor], labels: list[torch.Tensor],
               prompt_lengths: list[int], *, steps: int = 300, batch_size: int = 8, max_length: int = 128,
               depth: int = 3, lr: float = 1e-3, prompt_weight: float = 0.1, seed: int = 0, log_every: int = 50,
               progress: bool = False) -> list[tuple]:
    """Train ``head`` with training-time test on (features, tokens, target labels) of whole sequences: each step
    averages ``training_loss`` over ``batch_size`` random crops of at most ``max_length`` rows. Returns the history
    [(step, loss, accuracy at depth 1 … depth)]."""
    from tqdm.auto import tqdm

    from ..draft_model import warmup_cosine

    if not features:
        raise ValueError("no training sequences: give the target's answers (see `python -m specdec_course.distill head`)")
    position = torch.full((head.vocab_size,), -100, dtype=torch.long)
    position[head.token_ids.cpu()] = torch.arange(len(head.token_ids))
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = warmup_cosine(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    usable = [i for i, s in enumerate(sequences) if len(s) >= 2]
    head.train()
    history = []
    for step in tqdm(range(steps), desc="training head", disable=not progress):
        optimizer.zero_grad()
        loss_sum, accuracy_sum = 0.0, [0.0] * depth
        for _ in range(batch_size):
            i = usable[int(torch.randint(0, len(usable), (1,), generator=generator))]
            n = len(sequences[i]) - 1                 # rows: (f_j, t_{j+1}) for j = 0 … n − 1
            first = int(torch.randint(0, max(n - max_length, 0) + 1, (1,), generator=generator))
            rows = slice(first, min(n, first + max_length))
            tokens = sequences[i][1:].long()[rows]
            label = position[labels[i][1:].long()[rows]]
            weights = torch.full((len(tokens),), prompt_weight)
            weights[max(prompt_lengths[i] - 2 - first, 0):] = 1.0   # rows whose label is an answer token
            loss, accuracy = training_loss(head, features[i][:-1][rows].float(), tokens, label, depth=depth, weights=weights)
            (loss / batch_size).backward()
            loss_sum += float(loss.detach()) / batch_size
            accuracy_sum = [a + (b if b == b else 0.0) / batch_size for a, b in zip(accuracy_sum, accuracy)]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            history.append((step, round(loss_sum, 4), [round(a, 4) for a in accuracy_sum]))
    head.eval()
    return history
