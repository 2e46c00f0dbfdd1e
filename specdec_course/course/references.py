"""Reference answers to the graded exercise tasks: what the visible checks (``checks``) and the hidden checks
compare a learner's function with.

Only the grader reads this module: the sandbox in which a learner's notebook is graded hides it (as it hides
``hidden_checks``), so no graded function can call or copy the answer it is graded against. ``checks`` keeps the
visible checks and their hints and reads this module only when a check runs.
"""
from __future__ import annotations

import math

import torch



# --------------------------------------------------------------------------- 00-05 · tasks beyond the chapters
def sampling_distribution(logits, temperature: float, top_k) -> torch.Tensor:
    """Reference for 00's ``sample_next_tokens``: the distribution it draws from, softmax(logits / T) over the
    ``top_k`` largest logits (every logit when top_k is None), 0 elsewhere; T = 0: all the mass on the argmax."""
    logits = torch.as_tensor(logits, dtype=torch.float64).reshape(-1)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), len(logits)).double()
    keep = torch.zeros(len(logits), dtype=torch.bool)
    keep[logits.topk(len(logits) if top_k is None else min(int(top_k), len(logits))).indices] = True
    scaled = torch.where(keep, logits / temperature, torch.full_like(logits, -math.inf))
    return torch.softmax(scaled, dim=-1)


def draft_tokens_fed(prompt_length: int, tau: int, accepted, use_cache: bool) -> list[int]:
    """Reference for 01's ``draft_tokens_fed``: the number of tokens each of the draft's forward passes reads over a
    run of speculative steps that accepted ``accepted[i]`` of τ drafts each (every step then adds the target's token).
    Without a cache every pass reads the whole context; with one, only what the cache has not read, the cache being
    cut back after each step to the kept tokens it has read (it never reads a step's last draft)."""
    fed, context, cached = [], int(prompt_length), 0
    for n in accepted:
        for t in range(tau):
            length = context + t
            fed.append(length - cached if use_cache else length)
            cached = length
        cached = min(cached, context + int(n))  # the rollback: prefix + accepted drafts, as far as the draft read them
        context += int(n) + 1
    return fed


def argmax_flips(one_pass, one_by_one, bound: float) -> tuple:
    """Reference for 02's ``argmax_flips``: (the first row of ``one_pass`` whose argmax could differ if no logit moved
    by more than ``bound``: top-1 − top-2 ≤ 2·bound; the first row whose argmax does differ between the two tensors),
    each None where there is none."""
    one_pass, one_by_one = torch.as_tensor(one_pass).double(), torch.as_tensor(one_by_one).double()
    top2 = one_pass.topk(2, dim=-1).values
    could = [i for i, (a, b) in enumerate(top2.tolist()) if a - b <= 2 * bound]
    does = [i for i in range(one_pass.shape[0]) if int(one_pass[i].argmax()) != int(one_by_one[i].argmax())]
    return (could[0] if could else None), (does[0] if does else None)


def step_outcome(p_tokens, q_tokens, r) -> tuple:
    """Reference for 03's ``by_hand``: (the rule's verdict "A"/"R" on every draft, even after a rejection; n, the
    consecutive accepted drafts; the tokens the step appends, n + 1)."""
    verdicts = ["A" if p >= q or u <= p / q else "R" for p, q, u in zip(p_tokens, q_tokens, r)]
    n = next((t for t, v in enumerate(verdicts) if v == "R"), len(verdicts))
    return verdicts, n, n + 1


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


def cache_plan(config: dict, batch: int, budget_bytes: int) -> tuple[int, int]:
    """Reference for 05's ``cache_plan``: (KV-cache bytes per position for the whole batch, the longest context whose
    cache fits ``budget_bytes``) for a config.json-style dict (``head_dim`` defaults to hidden_size / heads,
    ``num_key_value_heads`` to the number of heads, the element size comes from ``torch_dtype``)."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    per_position = 2 * config["num_hidden_layers"] * kv_heads * head_dim * DTYPE_BYTES[config["torch_dtype"]] * batch
    return per_position, budget_bytes // per_position


def choose_draft(candidates: dict, verify_ratio: dict, taus=range(1, 9)) -> tuple:
    """Reference: (name, τ, predicted speedup) of the candidate draft and τ with the largest E(α, τ) / (τ·c + v(τ)),
    candidates {name: (α, c)}, v(τ) = verify_ratio[τ] = T(τ+1)/T(1)."""
    from ..perf.cost_model import expected_tokens_per_step

    best = max(((name, tau, expected_tokens_per_step(alpha, tau) / (tau * c + verify_ratio[tau]))
                for name, (alpha, c) in candidates.items() for tau in taus), key=lambda row: row[2])
    return best


def held_out_alpha(draft, held_out: dict) -> float:
    """Reference: the draft's teacher-forced agreement with the target's argmax labels over every answer position of
    ``held_out`` ({"tokens", "labels", "prompt_lengths"} as `distill.make_data` makes it), pooled (hits / positions)."""
    from ..distill import label_accuracy

    return label_accuracy(draft, held_out)


def reference_choice(target_ms: dict, draft_ms: float, alpha: float, max_tau: int) -> tuple[int, dict]:
    from ..perf.cost_model import Costs, expected_tokens_per_step

    costs = Costs(target_ms, draft_ms)
    scores = {t: costs.speedup(expected_tokens_per_step(alpha, t), t) for t in range(1, max_tau + 1)}
    return max(scores, key=scores.get), scores


def continuation(tokens, tau, max_ngram, *, oldest=False, shortest_first=False):
    """find_continuation, and two likely mistakes (the oldest occurrence; the shortest n-gram first), to name them."""
    length = len(tokens)
    sizes = list(range(min(max_ngram, length - 1), 0, -1))
    for n in (sizes[::-1] if shortest_first else sizes):
        tail = tokens[length - n:]
        starts = range(0, length - n) if oldest else range(length - n - 1, -1, -1)
        for start in starts:
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + tau]
    return []


def speedup(alpha, c, tau, curve) -> float:
    """The cost model's speedup for a drafter at (α, c) and τ, costs in units of T(1)."""
    from ..perf.cost_model import Costs, expected_tokens_per_step

    return Costs(curve, c).speedup(expected_tokens_per_step(alpha, tau), tau)


def drafter_options(table, curve, memory_mb, max_step, max_tau) -> dict:
    """Every allowed choice → its predicted speedup: ("target only", 0) always, and each (drafter, τ) within the memory
    budget whose step τ·c + T(τ+1)/T(1) fits ``max_step``."""
    options = {("target only", 0): 1.0}
    for name, row in table.items():
        if memory_mb is not None and row["memory_mb"] > memory_mb:
            continue
        for tau in range(1, max_tau + 1):
            if max_step is not None and tau * row["c"] + curve[tau + 1] > max_step:
                continue
            options[(name, tau)] = speedup(row["alpha"], row["c"], tau, curve)
    return options


def tree_walk(tokens, parents, target_argmax):
    """The package's own greedy walk (``tree.accept_greedy``), fed one-hot logits that put the argmax where given."""
    from ..tree import TokenTree, accept_greedy

    logits = torch.nn.functional.one_hot(torch.tensor(target_argmax), max(tokens + target_argmax) + 1).float()
    return accept_greedy(TokenTree(list(tokens), list(parents), [0.0] * len(tokens)), logits)


def shape_value(shape, alpha_of_rank, cost_curve, c) -> float:
    """(E + 1) / (levels · c + T(nodes + 1)/T(1)) of a static shape: level d adds a₀^(d−1) · Σ_{r < w_d} a_r."""
    expected = 1.0 + sum(alpha_of_rank[0] ** d * sum(alpha_of_rank[:w]) for d, w in enumerate(shape))
    return expected / (len(shape) * c + cost_curve[sum(shape) + 1])


def compositions(total: int):
    if total == 0:
        yield ()
        return
    for first in range(1, total + 1):
        for rest in compositions(total - first):
            yield (first,) + rest


def static_shape_values(alpha_of_rank, cost_curve, c, max_nodes) -> dict:
    """The predicted speedup of every static shape of at most ``max_nodes`` nodes."""
    return {shape: shape_value(shape, alpha_of_rank, cost_curve, c)
            for m in range(1, max_nodes + 1) for shape in compositions(m)}


# --------------------------------------------------------------------------- 08 · measuring a draft, 09 · a request mix, a context bigram
def draft_agreement(draft, input_ids, target_tokens) -> float:
    """Reference for 08 Task 1: the share of ``target_tokens`` the draft's argmax predicts, teacher-forced."""
    from ..perf.analysis import greedy_agreement

    return greedy_agreement(draft, input_ids, list(target_tokens)) / len(target_tokens)


def mix_speedup(alphas: dict, c: float, tau: int, curve: dict, mix: dict) -> float:
    """The overall speedup of one drafter at one τ over a request mix: the target alone's time over the drafter's,
    1 / Σ_kind share / S(α_kind); ``mix`` gives each kind's share of the generated tokens."""
    return 1.0 / sum(share / speedup(alphas[kind], c, tau, curve) for kind, share in mix.items() if share)


def bigram_proposal(tokens, tau: int, *, first: bool = False) -> list[int]:
    """The context bigram drafter's proposal: each token's follower is the token after its most recent occurrence
    that has a token after it (``first``: after its FIRST occurrence, a mistake to name); chain from the last token
    up to τ times, stopping at a token without a follower."""
    tokens = [int(t) for t in tokens]
    follows: dict[int, int] = {}
    for before, after in zip(tokens, tokens[1:]):
        if not first or before not in follows:
            follows[before] = after
    proposal = []
    last = tokens[-1] if tokens else None
    while len(proposal) < tau and last in follows:
        last = follows[last]
        proposal.append(last)
    return proposal


# --------------------------------------------------------------------------- 06 · a verification budget, 07 · a latency cap
def budget_options(target_ms: dict, draft_ms: float, alpha: float, budget_ms: float, max_tau: int) -> dict:
    """{τ: predicted speedup} of every choice that fits a budget of ``budget_ms`` of target time per generated token:
    τ = 0 (the target alone: T(1) per token, speedup 1) and each τ in 1 … max_tau whose T(τ+1)/E(α, τ) fits (speedup
    E·T(1)/(τ·d + T(τ+1))); drafting runs on the drafter and costs the target nothing."""
    from ..perf.cost_model import expected_tokens_per_step

    options = {0: 1.0} if target_ms[1] <= budget_ms else {}
    for tau in range(1, max_tau + 1):
        tokens = expected_tokens_per_step(alpha, tau)
        if target_ms[tau + 1] / tokens <= budget_ms:
            options[tau] = tokens * target_ms[1] / (tau * draft_ms + target_ms[tau + 1])
    return options


def capped_options(target_ms: dict, draft_ms: float, alpha: float, max_step_ms: float, max_tau: int) -> dict:
    """{τ: predicted speedup} of every τ in 1 … max_tau whose step τ·d + T(τ+1) fits ``max_step_ms``."""
    from ..perf.cost_model import expected_tokens_per_step

    return {tau: expected_tokens_per_step(alpha, tau) * target_ms[1] / (tau * draft_ms + target_ms[tau + 1])
            for tau in range(1, max_tau + 1) if tau * draft_ms + target_ms[tau + 1] <= max_step_ms}
