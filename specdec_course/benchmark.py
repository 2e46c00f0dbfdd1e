"""Side-by-side speed of target-only and speculative greedy decoding, with and without KV caches.

Every configuration decodes the same prompts in one run; the table gives tokens/s, the ratio to
target-only greedy decoding (with its cache) and whether the output was identical to it.
"""
from __future__ import annotations

import time

from .generation import autoregressive_generate
from .models import chat_prompt
from .speculative import speculative_generate

QUICK_PROMPTS, FULL_PROMPTS = 4, 8  # the first held-out prompts: never used to train the draft, not picked by hand


def bench_prompts(quick: bool = False) -> list[str]:
    """The benchmark's default prompts: the first 4 (quick) or 8 prompts of the held-out split."""
    from .distill import load_prompts

    return load_prompts("heldout")[: QUICK_PROMPTS if quick else FULL_PROMPTS]


def _target_only(target, ids, max_new_tokens, eos):
    start = time.perf_counter()
    results = [autoregressive_generate(target, x, max_new_tokens, eos_token_id=eos) for x in ids]
    return results, time.perf_counter() - start


def run_benchmark(target, draft, tokenizer, *, taus=range(1, 9), max_new_tokens: int = 96, prompts=None,
                  kinds=("none", "dynamic", "static"), progress: bool = True) -> dict:
    """Decode ``prompts`` (default: ``bench_prompts()``) with every configuration, one after another in one run.

    Target-only greedy decoding is timed first and again last; the mean of the two is the baseline of every
    ratio, and both are reported, so a machine that drifts during the run shows it.
    """
    prompts = list(prompts or bench_prompts())
    ids = [chat_prompt(tokenizer, p) for p in prompts]
    eos = tokenizer.eos_token_id
    speculative_generate(target, draft, ids[0], 8, tau=2)  # warm-up
    baseline, first_time = _target_only(target, ids, max_new_tokens, eos)
    n_tokens = sum(len(r.tokens) for r in baseline)
    rows = []
    for tau in taus:
        for kind in kinds:
            start = time.perf_counter()
            results = [speculative_generate(target, draft, x, max_new_tokens, tau=tau, eos_token_id=eos,
                                            use_cache=kind != "none", cache_kind=None if kind == "none" else kind) for x in ids]
            elapsed = time.perf_counter() - start
            tokens = sum(len(r.tokens) for r in results)
            passes = sum(r.target_passes for r in results)
            drafted = sum(r.drafted for r in results)
            rows.append({"config": f"speculative, {'no cache' if kind == 'none' else kind + ' cache'}", "tau": tau,
                         "tokens_per_s": tokens / elapsed,
                         "identical": all(r.tokens == b.tokens for r, b in zip(results, baseline)),
                         "alpha": sum(s.n_accepted for r in results for s in r.steps) / max(drafted, 1),
                         "tokens_per_pass": tokens / max(passes, 1)})
            if progress:
                print(f"{rows[-1]['config']:28s} tau={tau}: {rows[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
    again, last_time = _target_only(target, ids, max_new_tokens, eos)
    base_tps = n_tokens / ((first_time + last_time) / 2)
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / base_tps
    rows.insert(0, {"config": "target only (KV cache)", "tau": None, "tokens_per_s": base_tps, "ratio": 1.0,
                    "identical": all(r.tokens == b.tokens for r, b in zip(again, baseline)), "alpha": None,
                    "tokens_per_pass": 1.0})
    return {"prompts": prompts, "max_new_tokens": max_new_tokens, "tokens": n_tokens, "rows": rows,
            "target_only_tokens_per_s": {"first run": n_tokens / first_time, "last run": n_tokens / last_time}}


def format_row(row: dict) -> str:
    tau = "" if row["tau"] is None else str(row["tau"])
    alpha = "" if row["alpha"] is None else f"{row['alpha']:.2f}"
    return (f"{row['config']:28s} {tau:>3s} {row['tokens_per_s']:8.1f} {row['ratio']:6.2f}x {alpha:>6s} "
            f"{row['tokens_per_pass']:6.2f} {'yes' if row['identical'] else 'NO':>9s}")


def format_table(report: dict) -> str:
    head = f"{'configuration':28s} {'tau':>3s} {'tokens/s':>8s} {'ratio':>7s} {'alpha':>6s} {'tok/pass':>6s} {'identical':>9s}"
    lines = [head] + [format_row(r) for r in report["rows"]]
    best = max(report["rows"][1:], key=lambda r: r["ratio"])
    lines.append("")
    drift = report.get("target_only_tokens_per_s")
    if drift:
        lines.append(f"target only: {drift['first run']:.1f} tokens/s at the start of the run, {drift['last run']:.1f} at the end "
                     "(the ratios use their mean)")
    lines.append(f"best: {best['config']}, tau={best['tau']}: {best['ratio']:.2f}x target-only greedy; "
                 f"all outputs identical to target greedy: {all(r['identical'] for r in report['rows'])}")
    return "\n".join(lines)
