"""Reference answers to the graded exercise tasks: what the visible checks (``checks``) and the hidden checks
compare a learner's function with.

Only the grader reads this module: the sandbox in which a learner's notebook is graded hides it (as it hides
``hidden_checks``), so no graded function can call or copy the answer it is graded against. ``checks`` keeps the
visible checks and their hints and reads this module only when a check runs.
"""
from __future__ import annotations

import torch

from ..generation import autoregressive_generate


def kept_per_position(target, draft, input_ids, n_tokens: int, tau: int, prefix_only: bool) -> list[int]:
    """Reference: along the target's greedy continuation of ``input_ids`` (n_tokens), draft τ tokens from every start
    s = 0 … n_tokens − τ (correctly, or each from the context alone with ``prefix_only``); entry t counts the starts
    whose first t + 1 drafts all equal the continuation."""
    from ..draft import draft_tokens

    answer = autoregressive_generate(target, input_ids, n_tokens).tokens
    kept = [0] * tau
    for start in range(n_tokens - tau + 1):
        context = torch.cat([input_ids, torch.tensor([answer[:start]], dtype=torch.long)], dim=1)
        if prefix_only:
            with torch.no_grad():
                guess = [int(draft(context).logits[0, -1].argmax())] * tau
        else:
            guess = draft_tokens(draft, context, tau).tokens
        for t in range(tau):
            if guess[:t + 1] != answer[start:start + t + 1]:
                break
            kept[t] += 1
    return kept


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


def cached_pass_gap(target, input_ids, draft_ids) -> tuple[float, float]:
    """(largest |logit difference| between ONE cached pass over the prefix's last token and the drafts and the same k
    tokens fed one at a time on the cache, smallest top-2 logit margin over the one pass's k rows)."""
    from ..cache import new_cache, rollback

    fed = torch.cat([input_ids[:, -1:], torch.tensor([list(draft_ids)], dtype=torch.long)], dim=1)
    with torch.no_grad():
        cache = new_cache(target)
        target(input_ids[:, :-1], past_key_values=cache, use_cache=True)
        one_pass = target(fed, past_key_values=cache, use_cache=True).logits[0]
        rollback(cache, input_ids.shape[1] - 1)
        one_by_one = torch.stack([target(fed[:, t:t + 1], past_key_values=cache, use_cache=True).logits[0, -1]
                                  for t in range(fed.shape[1])])
    top2 = one_pass.topk(2, dim=-1).values
    return float((one_pass - one_by_one).abs().max()), float((top2[:, 0] - top2[:, 1]).min())


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
