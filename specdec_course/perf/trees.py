"""Chains against token trees, side by side, and the cost model extended to trees.

A step of either kind costs the draft's passes, one target pass over the m drafted nodes (and the one token it has not
read yet) and the loop's own overhead o; it yields the E accepted nodes and one token of the target's:

    step  = passes · d + T(m + 1) + o            a chain of τ: m = τ nodes, τ draft passes
    speedup = (E + 1) · (T(1) + o) / step         a dynamic tree of b nodes: b passes (grown a level at a time:
                                                  one per level); a static shape: one per level

against target-only at T(1) + o per token. A tree buys a larger E with more nodes (a larger T(m + 1)) and more draft
passes; which budget pays is a question for the machine's own T(k) and d, and for how much the draft's second and third
choices are worth on the text: ``choose_tree_budget`` measures both and picks.
"""
from __future__ import annotations

import torch

from . import clock


def step_costs(target, draft, *, max_nodes: int = 16, prefix_length: int = 64, repeats: int = 3) -> dict:
    """Milliseconds: ``T`` = {k: one cached target pass over k tokens} for k = 1 … max_nodes + 1 and ``draft`` = one
    cached draft pass over one token (medians of ``repeats``): a draft model's forward pass; a drafter's time per
    further drafted token (``cost_model.draft_costs``: the feature head's one layer); 0 for prompt lookup (no model)."""
    from ..drafters import PromptLookup
    from ..generation import forward_time
    from .cost_model import draft_costs

    ks = range(1, max_nodes + 2)
    if isinstance(draft, torch.nn.Module):
        draft_ms = 1000 * forward_time(draft, prefix_length, 1, repeats=repeats)
    elif isinstance(draft, PromptLookup):
        draft_ms = 0.0
    else:
        draft_ms = draft_costs(target, draft, prefix_length=prefix_length, repeats=repeats)[1]
    return {"T": {k: 1000 * forward_time(target, prefix_length, k, repeats=repeats) for k in ks}, "draft": draft_ms}


def draft_passes(kind: str, setting) -> int:
    """Draft passes per step: a chain of τ makes τ; a dynamic tree of b nodes one for the root and one per node it
    expands (b); a tree grown a level at a time, setting (b, levels), one per level; a static shape one per level."""
    if kind in ("chain", "tree"):
        return int(setting)
    if kind == "levels":
        return int(setting[1])
    if kind == "static":
        return len(setting)
    raise ValueError(f"kind must be 'chain', 'tree', 'levels' or 'static', got {kind!r}")


def nodes_of(kind: str, setting) -> int:
    if kind == "levels":
        return int(setting[0])
    return sum(setting) if kind == "static" else int(setting)


def predicted_speedup(costs: dict, tokens_per_step: float, passes: int, nodes: int, overhead_ms: float = 0.0) -> float:
    """(E + 1)(T(1) + o) / (passes · d + T(m + 1) + o), with E + 1 = ``tokens_per_step`` and m = ``nodes``."""
    T = costs["T"]
    if nodes + 1 not in T:
        raise ValueError(f"no measured T({nodes + 1}): measure the cost curve up to {nodes + 1} tokens")
    step = passes * costs["draft"] + T[nodes + 1] + overhead_ms
    return tokens_per_step * (T[1] + overhead_ms) / step


def run_configuration(target, draft, ids, max_new_tokens, eos, kind, setting):
    """(tokens, target passes) of one configuration: target-only, a chain (the course loop) or a tree."""
    from ..generation import autoregressive_generate
    from ..speculative import speculative_generate
    from ..tree import tree_generate

    if kind == "target":
        tokens = autoregressive_generate(target, ids, max_new_tokens, eos_token_id=eos).tokens
        return tokens, len(tokens)
    if kind == "chain":
        result = speculative_generate(target, draft, ids, max_new_tokens, tau=setting, eos_token_id=eos,
                                      cache_kind="dynamic")
        return result.tokens, result.target_passes
    if kind == "static":
        options = {"shape": tuple(setting)}
    elif kind == "levels":
        options = {"budget": setting[0], "levels": setting[1]}
    else:
        options = {"budget": setting}
    result = tree_generate(target, draft, ids, max_new_tokens, eos_token_id=eos, **options)
    return result.tokens, result.target_passes


@torch.no_grad()
def tree_benchmark(target, draft, tokenizer, prompts, *, taus=(2, 3), budgets=(4, 8, 16), shapes=((4, 2, 1, 1),),
                   level_trees=(), max_new_tokens: int = 48, costs: dict | None = None, repeats: int = 3,
                   progress: bool = True) -> dict:
    """Target-only, chains of each τ and trees (dynamic of each budget; dynamic grown a level at a time, each
    (budget, levels) of ``level_trees``; static of each shape) from the same draft,
    prompt by prompt in turns (target-only runs again at the end of each prompt's round: ``target_drift`` is how
    far its speed moved, the run's own noise). Each row: tokens/s, ratio to target-only, tokens per target pass, nodes, draft passes,
    the cost model's predicted speedup (from ``costs``, measured first when not given, and the row's own tokens per
    pass) and whether every output equals target-only greedy."""
    from ..models import chat_prompt

    configs = [("target", None)] + [("chain", t) for t in taus] + [("tree", b) for b in budgets]
    configs += [("levels", (int(b), int(d))) for b, d in level_trees] + [("static", tuple(s)) for s in shapes]
    most = max(nodes_of(k, s) for k, s in configs[1:]) if len(configs) > 1 else 1
    costs = costs or step_costs(target, draft, max_nodes=most, repeats=repeats)
    ids = [chat_prompt(tokenizer, p).to(target.device) for p in prompts]
    eos = tokenizer.eos_token_id
    totals = {c: {"seconds": 0.0, "tokens": 0, "passes": 0, "identical": []} for c in configs}
    again = {"seconds": 0.0, "tokens": 0}  # target-only once more at the end of each prompt: the run's own drift
    for index, x in enumerate(ids):
        reference = None
        for config in configs + [("target", "again")]:
            start = clock.now()
            tokens, passes = run_configuration(target, draft, x, max_new_tokens, eos, *config)
            row = totals[config] if config[1] != "again" else again
            row["seconds"] += clock.now() - start
            row["tokens"] += len(tokens)
            if config[1] == "again":
                continue
            row["passes"] += passes
            reference = tokens if reference is None else reference
            row["identical"].append(tokens == reference)
        if progress:
            print(f"prompt {index + 1}/{len(ids)} done", flush=True)
    base = totals[("target", None)]
    # how far target-only speed moved between the start and the end of each prompt's round: the run's noise
    drift = abs((again["tokens"] / again["seconds"]) / (base["tokens"] / base["seconds"]) - 1)
    per_token_ms = 1000 * base["seconds"] / max(base["tokens"], 1)
    overhead = max(per_token_ms - costs["T"][1], 0.0)
    rows = []
    for (kind, setting), r in totals.items():
        row = {"kind": kind, "setting": setting, "tokens_per_s": r["tokens"] / r["seconds"],
               "ratio": (r["tokens"] / r["seconds"]) / (base["tokens"] / base["seconds"]),
               "tokens_per_pass": r["tokens"] / max(r["passes"], 1), "identical": all(r["identical"])}
        if kind != "target":
            row.update(nodes=nodes_of(kind, setting), draft_passes=draft_passes(kind, setting),
                       predicted=predicted_speedup(costs, row["tokens_per_pass"], draft_passes(kind, setting),
                                                   nodes_of(kind, setting), overhead))
        rows.append(row)
    return {"prompts": list(prompts), "max_new_tokens": max_new_tokens, "costs_ms": costs, "overhead_ms": overhead,
            "target_drift": drift, "rows": rows}


def best_rows(report: dict) -> dict:
    """The fastest chain and the fastest tree of a ``tree_benchmark`` report, and the tree's gains over the chain."""
    chains = [r for r in report["rows"] if r["kind"] == "chain"]
    trees = [r for r in report["rows"] if r["kind"] in ("tree", "levels", "static")]
    if not chains or not trees:
        raise ValueError("the report needs at least one chain row and one tree row")
    chain = max(chains, key=lambda r: r["ratio"])
    tree = max(trees, key=lambda r: r["ratio"])
    best_chain_tpp = max(r["tokens_per_pass"] for r in chains)
    return {"chain": chain, "tree": tree, "speedup_over_chain": tree["ratio"] / chain["ratio"],
            "tokens_per_pass_over_chain": max(r["tokens_per_pass"] for r in trees) / best_chain_tpp}


def row_name(row: dict) -> str:
    """A row's configuration in words: "chain, τ = 3", "dynamic tree, 8 nodes", "static tree 4-2-1-1", ..."""
    kind, setting = row["kind"], row["setting"]
    if kind == "static":
        return "static tree " + "-".join(map(str, setting))
    if kind == "levels":
        return f"dynamic tree, {setting[0]} nodes by levels"
    if kind == "tree":
        return f"dynamic tree, {setting} nodes"
    if kind == "chain":
        return f"chain, τ = {setting}"
    return "target only (course loop)"


def format_tree_table(report: dict) -> str:
    lines = [f"{'configuration':34s} {'nodes':>5s} {'passes':>6s} {'tokens/s':>8s} {'ratio':>6s} {'tok/pass':>8s} "
             f"{'predicted':>9s} {'identical':>9s}"]
    for r in report["rows"]:
        name = row_name(r)
        lines.append(f"{name:34s} {r.get('nodes', ''):>5} {r.get('draft_passes', ''):>6} {r['tokens_per_s']:8.1f} "
                     f"{r['ratio']:5.2f}x {r['tokens_per_pass']:8.2f} "
                     f"{(format(r['predicted'], '.2f') + 'x') if 'predicted' in r else '':>9s} "
                     f"{'yes' if r['identical'] else 'NO':>9s}")
    T = report["costs_ms"]["T"]
    lines += ["", f"cost model: T(1) = {T[1]:.1f} ms, T({max(T)})/T(1) = {T[max(T)] / T[1]:.2f}, one draft pass "
                  f"{report['costs_ms']['draft']:.1f} ms, loop overhead {report['overhead_ms']:.1f} ms per target pass; "
                  "predicted = (tokens per pass)(T(1) + o) / (passes · d + T(nodes + 1) + o)"]
    if "target_drift" in report:
        lines.append(f"target-only speed at the end of each round against its start: {report['target_drift']:.1%} apart "
                     "(this run's noise)")
    if any(r["kind"] == "chain" for r in report["rows"]) and any(r["kind"] in ("tree", "levels", "static")
                                                                for r in report["rows"]):
        best = best_rows(report)
        lines.append(f"best tree / best chain: {best['speedup_over_chain']:.2f}x the speed, "
                     f"{best['tokens_per_pass_over_chain']:.2f}x the tokens per pass")
    return "\n".join(lines)


@torch.no_grad()
def choose_tree_budget(target, draft, prompt_ids, *, budgets=(2, 4, 6, 8, 12, 16), costs: dict | None = None,
                       max_new_tokens: int = 32, overhead_ms: float = 0.0, levels: int | None = None,
                       eos_token_id=None) -> dict:
    """The dynamic tree's node budget chosen by measurement: for each budget b, the tokens per target pass that trees of
    b nodes keep on the calibration prompts (greedy, so the same on every machine) and the machine's costs
    (``step_costs`` when not given) give a predicted speedup; the largest wins.

    ``prompt_ids``: one prompt (a (1, n) tensor) or a list of them; calibrate on the prompts the choice is meant for
    (the benchmark's own, to compare the choice with what it measures), with the same ``max_new_tokens`` and
    ``eos_token_id``. ``levels``: the trees grow a level at a time (EAGLE-2's way, ``grow_tree_by_levels``) in
    min(levels, b) draft passes, and are priced so: one draft pass per level, not per node; None: a node at a time,
    one draft pass per node. Returns {"budget", "predicted": {b: x}, "tokens_per_pass": {b: n},
    "draft_passes": {b: passes}, "levels"}."""
    from ..tree import tree_generate

    if not budgets or any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be node counts of at least 1, got {budgets!r}")
    if levels is not None and int(levels) < 1:
        raise ValueError(f"levels (draft passes per tree) must be at least 1, got {levels!r}")
    prompts = [prompt_ids] if isinstance(prompt_ids, torch.Tensor) else list(prompt_ids)
    if not prompts:
        raise ValueError("give at least one calibration prompt")
    costs = costs or step_costs(target, draft, max_nodes=max(budgets))
    per_pass, predicted, passes_of = {}, {}, {}
    for b in budgets:
        if levels is None:
            kind, setting, options = "tree", b, {"budget": b}
        else:
            depth = min(int(levels), int(b))  # a tree of b nodes is at most b deep
            kind, setting, options = "levels", (b, depth), {"budget": b, "levels": depth}
        tokens = passes = 0
        for x in prompts:
            result = tree_generate(target, draft, x, max_new_tokens, eos_token_id=eos_token_id, **options)
            tokens, passes = tokens + len(result.tokens), passes + result.target_passes
        per_pass[b] = tokens / max(passes, 1)
        passes_of[b] = draft_passes(kind, setting)
        predicted[b] = predicted_speedup(costs, per_pass[b], passes_of[b], b, overhead_ms)
    best = max(budgets, key=lambda b: predicted[b])
    return {"budget": best, "predicted": predicted, "tokens_per_pass": per_pass, "draft_passes": passes_of,
            "levels": levels}
