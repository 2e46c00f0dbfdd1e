"""Side-by-side speed of target-only and speculative greedy decoding, and of transformers' assisted generation.

Every configuration decodes the same prompts in one run; the table gives tokens/s, the ratio to target-only greedy
decoding (the course's loop with its cache), α and the kept fraction, tokens per target pass, the cost model's
predicted speedup, and whether the output was identical to target greedy.
``kernel_benchmark`` repeats this for each matrix-multiply path (``specdec_course.perf.kernels``) on the same
model objects, with the cost curve T(k)/T(1) of each path and transformers' ``generate`` on the stock
path as the outside reference.
"""
from __future__ import annotations

from . import clock
from ..generation import autoregressive_generate, mismatch_margin
from .kernels import DRAFT_KS
from ..models import chat_prompt
from .cost_model import alpha_from_steps, kept_fraction_of_steps
from ..speculative import speculative_generate

QUICK_PROMPTS, FULL_PROMPTS = 4, 8  # the first prompts of the split, in its order: never trained on, not picked by hand


def bench_prompts(quick: bool = False, split: str = "eval") -> list[str]:
    """The benchmark's default prompts: the first 4 (quick) or 8 prompts of a split of the prompt set (default: the
    evaluation split, written independently of any training data)."""
    from ..distill import load_prompts

    return load_prompts(split)[: QUICK_PROMPTS if quick else FULL_PROMPTS]


def _target_only(target, ids, max_new_tokens, eos):
    start = clock.now()
    results = [autoregressive_generate(target, x, max_new_tokens, eos_token_id=eos) for x in ids]
    return results, clock.now() - start


def _timed_generate(target, ids, max_new_tokens, eos, **options):
    """transformers' greedy ``generate(**options)`` on each prompt: (token lists, seconds, target passes)."""
    import torch

    from .trace import count_calls

    calls = count_calls(target)
    try:
        start = clock.now()
        outputs = []
        with torch.no_grad():
            for x in ids:
                out = target.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new_tokens,
                                      eos_token_id=eos, pad_token_id=eos, **options)
                outputs.append(out[0, x.shape[1]:].tolist())
        seconds = clock.now() - start
    finally:
        calls.remove()
    return outputs, seconds, calls.count


def assisted_generate(target, draft, ids, max_new_tokens, eos, settings: dict):
    """transformers' assisted generation (``generate(..., assistant_model=draft)``, greedy) on each prompt, with
    ``settings`` applied to the draft's generation config for the run: (token lists, seconds, target passes)."""
    from transformers.utils import logging as transformers_logging

    config = draft.generation_config
    saved = {key: getattr(config, key, None) for key in ASSISTED_KEYS}
    for key, value in settings.items():
        setattr(config, key, value)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # assisted generation warns about its own internal arguments
    try:
        return _timed_generate(target, ids, max_new_tokens, eos, assistant_model=draft)
    finally:
        transformers_logging.set_verbosity(verbosity)
        for key, value in saved.items():
            setattr(config, key, value)


ASSISTED_KEYS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def _prediction(costs, prediction, tau):
    from .cost_model import expected_tokens_per_step, replay_greedy, run_speedup

    expected = expected_tokens_per_step(prediction["alpha"], tau)
    prefills = prediction["prefill_ms"]
    independent = [(prefill, len(m), len(m) / expected) for prefill, m in zip(prefills, prediction["matches"])]
    replayed = [(prefill, len(m), replay_greedy(m, tau)[1]) for prefill, m in zip(prefills, prediction["matches"])]
    return {"predicted": run_speedup(costs, independent, tau), "predicted_replay": run_speedup(costs, replayed, tau)}


def run_benchmark(target, draft, tokenizer, *, taus=range(1, 9), max_new_tokens: int = 96, prompts=None,
                  kinds=("none", "dynamic", "static"), policies=(), assisted: bool = False, predict: bool = True,
                  costs=None, cost_repeats: int = 5, progress: bool = True, bar=None) -> dict:
    """Decode ``prompts`` (default: ``bench_prompts()``) with every configuration, one after another in one run.

    Target-only greedy decoding (the course's loop) is timed first and again last; the mean of the two is the
    baseline of every ratio, and both are reported, so a machine that drifts during the run shows it. Rows:
    speculative greedy for each τ and cache kind, then each τ policy in ``policies`` ("adaptive", "heuristic"), then
    with ``assisted`` transformers' ``generate(do_sample=False)`` and its assisted generation with the same draft at
    its defaults and with a constant number of assistant tokens equal to each τ.
    With ``predict``: the cost model's speedup beside each measured one, from T(k), d and d₀ (``costs``, else
    ``cost_model.measure_costs`` at the start, median of ``cost_repeats`` passes) and α from the draft's agreement with
    the target's greedy output on these prompts; "predicted" assumes independent positions, "predicted_replay" replays
    the agreement exactly (see ``cost_model.replay_greedy``).

    The cost set is scaled to this run's own pace (``report["prediction"]["costs"]``, its ``scale``): T(1) becomes the
    target-only runs' mean time per token after the prompt, and every T(k), d and d₀ moves by the same factor. Costs
    measured at another moment differ from the run's by the machine's drift (a shared or virtual CPU changes speed by
    10-30 % within minutes), which moves every pass alike, while the loop's own work per token is about 1 % of T(1)
    (o and o₁ are folded into the scale). Taking the difference as an overhead instead would price target-only tokens
    and speculative steps at two different moments: a negative o₁ with o clamped at 0 biased every prediction down.
    """
    from .analysis import greedy_matches
    from .cost_model import measure_costs

    prompts = list(prompts or bench_prompts())
    ids = [chat_prompt(tokenizer, p).to(target.device) for p in prompts]
    eos = tokenizer.eos_token_id
    speculative_generate(target, draft, ids[0], 8, tau=2)  # warm-up
    baseline, first_time = _target_only(target, ids, max_new_tokens, eos)
    n_tokens = sum(len(r.tokens) for r in baseline)
    prediction = None
    if predict:
        if costs is None:
            costs = measure_costs(target, draft, repeats=cost_repeats)
        matches = [greedy_matches(draft, x, b.tokens) for x, b in zip(ids, baseline)]
        alpha = sum(map(sum, matches)) / max(sum(map(len, matches)), 1)
        prediction = {"alpha": alpha, "measured_costs": costs, "matches": matches,
                      "prefill_ms": [1000 * b.token_times[0] for b in baseline]}

    rows = []

    def add(row):
        rows.append(row)
        if bar is not None:
            bar.update(1)
        elif progress:
            tau = "" if row["tau"] is None else f" tau={row['tau']}"
            print(f"{row['config']:34s}{tau}: {row['tokens_per_s']:.1f} tokens/s", flush=True)

    def speculative_row(config, tau, kind, label_tau):
        start = clock.now()
        results = [speculative_generate(target, draft, x, max_new_tokens, tau=tau, eos_token_id=eos,
                                        use_cache=kind != "none", cache_kind=None if kind == "none" else kind) for x in ids]
        elapsed = clock.now() - start
        tokens = sum(len(r.tokens) for r in results)
        steps = [s for r in results for s in r.steps]
        row = {"config": config, "tau": label_tau, "tokens_per_s": tokens / elapsed,
               "identical": all(r.tokens == b.tokens for r, b in zip(results, baseline)),
               "alpha": alpha_from_steps(steps), "kept_fraction": kept_fraction_of_steps(steps),
               "tokens_per_pass": tokens / max(len(steps), 1), "mean_tau": sum(s.tau for s in steps) / max(len(steps), 1)}
        if prediction and isinstance(tau, int) and kind != "none":
            row["_predict_tau"] = tau  # predicted once the target-only pace of the whole run is known
        add(row)

    for tau in taus:
        for kind in kinds:
            speculative_row(f"speculative, {'no cache' if kind == 'none' else kind + ' cache'}", tau, kind, tau)
    for policy in policies:
        kind = "static" if "static" in kinds else kinds[-1]
        speculative_row(f"speculative, tau={policy}, {kind}", policy, kind, None)
    if assisted:
        generated, seconds = transformers_generate(target, ids, max_new_tokens, eos)
        add({"config": "transformers generate", "tau": None, "tokens_per_s": sum(map(len, generated)) / seconds,
             "identical": all(g == b.tokens for g, b in zip(generated, baseline)), "tokens_per_pass": 1.0})
        settings = [("assisted, transformers defaults", None, {})]
        settings += [("assisted, constant", tau, {"num_assistant_tokens": tau, "num_assistant_tokens_schedule": "constant",
                                                  "assistant_confidence_threshold": 0.0}) for tau in taus]
        for config, tau, setting in settings:
            outputs, seconds, passes = assisted_generate(target, draft, ids, max_new_tokens, eos, setting)
            tokens = sum(map(len, outputs))
            add({"config": config, "tau": tau, "tokens_per_s": tokens / seconds,
                 "identical": all(o == b.tokens for o, b in zip(outputs, baseline)), "tokens_per_pass": tokens / max(passes, 1)})
    again, last_time = _target_only(target, ids, max_new_tokens, eos)
    base_tps = n_tokens / ((first_time + last_time) / 2)
    if prediction:
        # the cost set at this run's own pace: T(1) := the target-only runs' mean time per token after the prompt
        steady = [t for run in (baseline, again) for b in run for t in b.token_times[1:]]
        measured = prediction["measured_costs"]
        pace_ms = 1000 * sum(steady) / len(steady) if steady else measured.target_ms[1] + measured.target_overhead_ms
        costs = measured.scaled(pace_ms / (measured.target_ms[1] + measured.target_overhead_ms))
        prediction["costs"] = costs.to_dict()
        for row in rows:
            tau = row.pop("_predict_tau", None)
            if tau is not None:
                row.update(_prediction(costs, prediction, tau))
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / base_tps
    rows.insert(0, {"config": "target only (course loop)", "tau": None, "tokens_per_s": base_tps, "ratio": 1.0,
                    "identical": all(r.tokens == b.tokens for r, b in zip(again, baseline)), "tokens_per_pass": 1.0})
    report = {"prompts": prompts, "max_new_tokens": max_new_tokens, "tokens": n_tokens, "rows": rows,
              "target_only_tokens_per_s": {"first run": n_tokens / first_time, "last run": n_tokens / last_time}}
    if prediction:
        report["prediction"] = {"alpha": prediction["alpha"], "costs": prediction["costs"],
                                "positions": sum(map(len, prediction["matches"]))}
    return report


def _number(row, key, spec):
    value = row.get(key)
    return "" if value is None else format(value, spec)


def format_row(row: dict) -> str:
    tau = "" if row["tau"] is None else str(row["tau"])
    if "kept_fraction" not in row and "alpha" in row:  # reports written before the two numbers had their own names
        row = {**row, "kept_fraction": row["alpha"], "alpha": None}
    predicted = _number(row, "predicted", ".2f")
    if predicted:
        predicted = f"{predicted}x/{_number(row, 'predicted_replay', '.2f')}x"
    return (f"{row['config']:34s} {tau:>3s} {row['tokens_per_s']:8.1f} {row['ratio']:6.2f}x {_number(row, 'alpha', '.2f'):>5s} "
            f"{_number(row, 'kept_fraction', '.2f'):>5s} {row['tokens_per_pass']:8.2f} {predicted:>13s} "
            f"{'yes' if row['identical'] else 'NO':>9s}")


def format_table(report: dict) -> str:
    head = (f"{'configuration':34s} {'tau':>3s} {'tokens/s':>8s} {'ratio':>7s} {'alpha':>5s} {'kept':>5s} {'tok/pass':>8s} "
            f"{'predicted':>13s} {'identical':>9s}")
    lines = [head] + [format_row(r) for r in report["rows"]]
    ours = [r for r in report["rows"][1:] if r["config"].startswith("speculative")] or report["rows"][1:]
    best = max(ours, key=lambda r: r["ratio"])
    lines.append("")
    lines.append("alpha: acceptance probability per position, estimated from the run; kept: kept fraction (accepted / "
                 "proposed drafts, falls as tau grows); predicted: cost model with independent positions / with the "
                 "draft's agreement replayed")
    drift = report.get("target_only_tokens_per_s")
    if drift:
        lines.append(f"target only: {drift['first run']:.1f} tokens/s at the start of the run, {drift['last run']:.1f} at the end "
                     "(the ratios use their mean)")
    prediction = report.get("prediction")
    if prediction:
        c = prediction["costs"]
        ks = sorted(int(k) for k in c["target_ms"])
        lines.append(f"cost model: alpha = {prediction['alpha']:.3f} (draft/target greedy agreement over {prediction['positions']} "
                     f"positions), T(1) = {c['target_ms'][ks[0]]:.1f} ms, T({ks[-1]})/T(1) = "
                     f"{c['target_ms'][ks[-1]] / c['target_ms'][ks[0]]:.2f}, draft per step {c.get('draft_step_ms', 0):.2f} + "
                     f"tau x {c['draft_ms']:.2f} ms (c = {c['c']:.3f}); the measured costs scaled x{c.get('scale', 1.0):.2f} "
                     "to this run's target-only pace")
    tau = f", tau={best['tau']}" if best["tau"] is not None else ""  # a policy's row names its τ in the config
    lines.append(f"best of ours: {best['config']}{tau}: {best['ratio']:.2f}x target-only greedy; "
                 f"all outputs identical to target greedy: {all(r['identical'] for r in report['rows'])}")
    assisted = [r for r in report["rows"] if r["config"].startswith("assisted")]
    if assisted:
        top = max(assisted, key=lambda r: r["ratio"])
        lines.append(f"best of transformers' assisted generation: {top['config']}"
                     f"{'' if top['tau'] is None else ', tau=' + str(top['tau'])}: {top['ratio']:.2f}x")
    return "\n".join(lines)


# --------------------------------------------------------------------------- kernel paths side by side
def transformers_generate(model, ids, max_new_tokens, eos):
    """transformers' own greedy ``generate`` on each prompt: (token lists, seconds)."""
    import torch

    start = clock.now()
    outputs = []
    with torch.no_grad():
        for x in ids:
            out = model.generate(x.to(model.device), attention_mask=torch.ones_like(x).to(model.device),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
            outputs.append(out[0, x.shape[1]:].tolist())
    return outputs, clock.now() - start


def first_mismatch(model, ids, expected: list[list[int]], got: list[list[int]]):
    """Where two greedy outputs first differ: prompt index, position and the target's top-2 logit margin there."""
    for index, (x, a, b) in enumerate(zip(ids, expected, got)):
        position, margin = mismatch_margin(model, x, a, b)
        if position is not None:
            return {"prompt": index, "position": position, "top2_margin": margin}
    return None


def kernel_configs(target, draft, kernels=("stock", "auto")) -> list[tuple[str, str]]:
    """(target path, draft path) for each name in ``kernels``; "auto" is the loaders' measured choice for each model."""
    from .kernels import choose_kernels

    configs = []
    for name in kernels:
        if name == "auto":
            config = (choose_kernels(target, "auto"), choose_kernels(draft, "auto", ks=DRAFT_KS))
        else:
            config = (name, name)
        if config not in configs:
            configs.append(config)
    return configs


def kernel_benchmark(target, draft, tokenizer, *, kernels=("stock", "auto"), taus=range(1, 9), max_new_tokens: int = 48,
                     prompts=None, kinds=("dynamic", "static"), policies=("adaptive", "heuristic"), assisted: bool = True,
                     cost_ks=range(1, 17), cost_repeats: int = 5, progress: bool = True) -> dict:
    """For each kernel configuration, on the same two model objects: the cost curve, target-only and speculative speed.

    1. T(k) of one cached target pass over k = 1 … 16 tokens on every available path, interleaved (median of
       ``cost_repeats``).
    2. transformers' ``generate(do_sample=False)`` with the target on the stock path (the outside reference).
    3. For each (target path, draft path): ``run_benchmark`` (target-only first and last, every τ and cache kind, the
       τ policies, transformers' generate and assisted generation on the same kernels, the cost model's predictions).
    The models are left on the loaders' choice ("auto").
    """
    from tqdm.auto import tqdm

    from .kernels import available_paths, choose_kernels, pass_times, remembered_min_rows, use_kernels

    prompts = list(prompts or bench_prompts())
    ids = [chat_prompt(tokenizer, p).to(target.device) for p in prompts]
    eos = tokenizer.eos_token_id
    configs = kernel_configs(target, draft, kernels)
    paths = available_paths(target)
    per_block = len(list(taus)) * len(kinds) + len(policies) + (2 + len(list(taus)) if assisted else 0)
    n_steps = len(paths) + 1 + len(configs) * per_block
    bar = tqdm(total=n_steps, desc="bench", disable=not progress, leave=False)

    cost = pass_times(target, paths, list(cost_ks), prefix_length=120, repeats=cost_repeats,
                      min_rows=remembered_min_rows(target))  # the paths take turns in every repeat
    bar.update(len(paths))
    use_kernels(target, "stock")
    generated, seconds = transformers_generate(target, ids, max_new_tokens, eos)
    bar.update(1)

    blocks = []
    for target_path, draft_path in configs:
        use_kernels(target, target_path, min_rows=remembered_min_rows(target) if target_path == "mixed" else None)
        use_kernels(draft, draft_path, min_rows=remembered_min_rows(draft, DRAFT_KS) if draft_path == "mixed" else None)
        report = run_benchmark(target, draft, tokenizer, taus=taus, max_new_tokens=max_new_tokens, prompts=prompts,
                               kinds=kinds, policies=policies, assisted=assisted, cost_repeats=cost_repeats,
                               progress=False, bar=bar)
        ours = [autoregressive_generate(target, x, max_new_tokens, eos_token_id=eos).tokens for x in ids]
        report.update({"target_kernels": target_path, "draft_kernels": draft_path,
                       "cost_ms": {k: 1000 * s for k, s in cost.get(target_path, {}).items()},
                       "same_as_generate": ours == generated,
                       "first_mismatch_with_generate": first_mismatch(target, ids, generated, ours)})
        blocks.append(report)
    bar.close()
    choose_kernels(target, "auto")
    choose_kernels(draft, "auto", ks=DRAFT_KS)
    n_tokens = sum(len(g) for g in generated)
    return {"prompts": prompts, "max_new_tokens": max_new_tokens,
            "cost_ms": {p: {k: 1000 * s for k, s in by_k.items()} for p, by_k in cost.items()},
            "transformers_generate": {"kernels": "stock", "tokens": n_tokens, "tokens_per_s": n_tokens / seconds},
            "blocks": blocks}


def format_kernel_report(report: dict) -> str:
    """The cost curves, then each kernel configuration's table, then the ratios the course cares about."""
    cost = report["cost_ms"]
    ks = sorted(next(iter(cost.values())), key=int)
    lines = ["one cached target pass over k new tokens: T(1) and T(k)/T(1)",
             f"{'path':18s} {'T(1) ms':>8s} " + " ".join(f"{'k=' + str(k):>5s}" for k in ks[1:])]
    for path, by_k in cost.items():
        t1 = by_k[ks[0]]
        lines.append(f"{path:18s} {t1:8.1f} " + " ".join(f"{by_k[k] / t1:5.2f}" for k in ks[1:]))
    gen = report["transformers_generate"]
    lines += ["", f"transformers generate(do_sample=False), stock kernels: {gen['tokens_per_s']:.1f} tokens/s"]
    for block in report["blocks"]:
        lines += ["", f"== target kernels: {block['target_kernels']}, draft kernels: {block['draft_kernels']} ==",
                  format_table(block)]
        base = block["rows"][0]["tokens_per_s"]
        mismatch = block["first_mismatch_with_generate"]
        same = "same tokens" if block["same_as_generate"] else (
            f"DIFFERENT tokens (prompt {mismatch['prompt']}, position {mismatch['position']}, "
            f"target top-2 logit margin {mismatch['top2_margin']:.2g} there)" if mismatch else "DIFFERENT tokens")
        lines.append(f"target-only on these kernels: {base / gen['tokens_per_s']:.2f}x transformers generate on stock ({same})")
        by_k = cost.get(block["target_kernels"])
        if by_k:
            worst = max(by_k[k] / by_k[ks[0]] for k in ks if 2 <= int(k) <= 8)
            lines.append(f"largest T(k)/T(1) for k = 2..8 on these kernels: {worst:.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- drafters side by side
def default_drafters(target, draft) -> dict:
    """The course's drafters for ``target``, by name: the draft model, the target's quantized copy (its form chosen by
    measurement), the two-level drafter over both, prompt lookup and the shipped feature head."""
    from ..drafters import ModelDrafter, PromptLookup, TwoLevelDrafter, quantized_copy

    from ..drafters.feature_head import HEAD_DIR, load_feature_head

    quantized = quantized_copy(target, "auto")
    drafters = {"draft model": ModelDrafter(draft), f"quantized self-draft ({quantized.quantization_scheme})": ModelDrafter(quantized),
                "two-level (quantized ← draft model)": TwoLevelDrafter(quantized, draft, inner_tau=3),
                "prompt lookup": PromptLookup.for_model(target)}
    if (HEAD_DIR / "config.json").is_file():
        drafters["feature head"] = load_feature_head(target)
    return drafters


def pass_floors(target, drafters: dict) -> dict:
    """The bandwidth floor of a one-token pass (``floor.py``) of the target and of each drafter that runs a model:
    {"bandwidth_gb_s": torch's copy bandwidth here, "mb": {name: MB read}, "ms": {name: MB / bandwidth}}."""
    from .floor import bytes_per_pass, copy_bandwidth, floor_ms

    bandwidth = copy_bandwidth()
    read = {"target": bytes_per_pass(target)}
    read.update({name: bytes_per_pass(d.cost_model) for name, d in drafters.items() if d.cost_model is not None})
    return {"bandwidth_gb_s": bandwidth, "mb": {n: b / 1e6 for n, b in read.items()},
            "ms": {n: floor_ms(b, bandwidth) for n, b in read.items()}}


def format_floors(floor: dict) -> str:
    return (f"floor of a one-token pass (bytes read / {floor['bandwidth_gb_s']:.0f} GB/s, torch's copy bandwidth): "
            + "; ".join(f"{name} {floor['mb'][name]:.0f} MB, {floor['ms'][name]:.1f} ms" for name in floor["mb"]))


def transformers_prompt_lookup(target, ids, max_new_tokens, eos, tau):
    """transformers' own prompt lookup decoding (``generate(prompt_lookup_num_tokens=τ)``, greedy): (tokens, s, passes)."""
    return _timed_generate(target, ids, max_new_tokens, eos, prompt_lookup_num_tokens=tau)


def prefill_ms(model_or_drafter, prompt_ids) -> float:
    """ms of the first pass over a prompt: a model's forward pass over it, or a drafter's start and first proposal (one
    pass over the whole prompt for a model drafter; ~0 for one that runs no model, such as prompt lookup)."""
    import torch

    from ..drafters.base import Drafter, as_drafter
    from ..generation import sync

    with torch.no_grad():
        if isinstance(model_or_drafter, Drafter) or not hasattr(model_or_drafter, "config"):
            drafter = as_drafter(model_or_drafter)
            prompt_ids = prompt_ids.to(drafter.device)
            start = clock.now()
            drafter.start(prompt_ids, max_length=prompt_ids.shape[1] + 2)
            drafter.propose(prompt_ids, 1)
            sync(prompt_ids.device)
            return 1000 * (clock.now() - start)
        prompt_ids = prompt_ids.to(model_or_drafter.device)
        start = clock.now()
        model_or_drafter(prompt_ids)
        sync(prompt_ids.device)
        return 1000 * (clock.now() - start)


def drafter_benchmark(target, tokenizer, drafters: dict, *, taus=(2, 4, 6), max_new_tokens: int = 64, prompts=None,
                      draft=None, cost_repeats: int = 5, progress: bool = True) -> dict:
    """Every drafter at every τ, target-only greedy decoding, and (with ``draft``) transformers' prompt lookup and
    assisted generation on the same model objects, prompt by prompt in turns, so a machine whose speed drifts
    affects every row alike. Each row: tokens/s, ratio to target-only, α, tokens per target pass, c (the drafter's
    time per drafted token over the target-only time per token), the cost model's predicted speedup (from T(k) and
    the drafter's cost measured beforehand, α from the row's run) and whether the output was identical."""
    from .cost_model import Costs, draft_costs, predicted_run_speedup
    from .kernels import current_pass_times

    prompts = list(prompts or bench_prompts())
    ids = [chat_prompt(tokenizer, p).to(target.device) for p in prompts]
    eos = tokenizer.eos_token_id
    target_ms = {k: 1000 * s for k, s in current_pass_times(target, range(1, max(taus) + 2), repeats=cost_repeats).items()}
    calibration = autoregressive_generate(target, ids[0], 48, eos_token_id=eos).tokens  # real text to time drafters on
    import torch

    real_text = torch.cat([ids[0], torch.tensor([calibration], device=ids[0].device)], dim=1)
    drafter_ms = {name: draft_costs(target, d, prefix=real_text, repeats=cost_repeats) for name, d in drafters.items()}
    # the passes over each prompt, which a run pays once: the target's (both ways) and each drafter's
    target_prefill_ms = sum(prefill_ms(target, x) for x in ids)
    drafter_prefill_ms = {name: sum(prefill_ms(d, x) for x in ids) for name, d in drafters.items()}
    configs = [(name, tau) for name in drafters for tau in taus]
    outside = []
    if draft is not None:
        outside = [("transformers prompt lookup", tau) for tau in taus] + [("transformers assisted", tau) for tau in taus]
    totals = {key: {"seconds": 0.0, "tokens": 0, "passes": 0, "steps": [], "outputs": [], "draft_s": 0.0}
              for key in [("target only", None)] + configs + outside}
    for index, x in enumerate(ids):
        start = clock.now()
        reference = autoregressive_generate(target, x, max_new_tokens, eos_token_id=eos)
        row = totals[("target only", None)]
        row["seconds"] += clock.now() - start
        row["tokens"] += len(reference.tokens)
        row["passes"] += len(reference.tokens)
        row["outputs"].append(True)
        for name, tau in configs:
            start = clock.now()
            result = speculative_generate(target, drafters[name], x, max_new_tokens, tau=tau, eos_token_id=eos)
            row = totals[(name, tau)]
            row["seconds"] += clock.now() - start
            row["tokens"] += len(result.tokens)
            row["passes"] += result.target_passes
            row["steps"] += result.steps
            row["draft_s"] += result.draft_time
            row["outputs"].append(result.tokens == reference.tokens)
        for name, tau in outside:
            if name == "transformers prompt lookup":
                outputs, seconds, passes = transformers_prompt_lookup(target, [x], max_new_tokens, eos, tau)
            else:
                outputs, seconds, passes = assisted_generate(target, draft, [x], max_new_tokens, eos, {
                    "num_assistant_tokens": tau, "num_assistant_tokens_schedule": "constant",
                    "assistant_confidence_threshold": 0.0})
            row = totals[(name, tau)]
            row["seconds"] += seconds
            row["tokens"] += len(outputs[0])
            row["passes"] += passes
            row["outputs"].append(outputs[0] == reference.tokens)
        if progress:
            print(f"prompt {index + 1}/{len(ids)} done", flush=True)

    base = totals[("target only", None)]
    base_tps = base["tokens"] / base["seconds"]
    per_token_ms = 1000 * base["seconds"] / base["tokens"]
    decode_ms = max((1000 * base["seconds"] - target_prefill_ms) / base["tokens"], target_ms[1])  # per token, prompt aside
    rows = [{"config": "target only (course loop)", "drafter": None, "tau": None, "tokens_per_s": base_tps, "ratio": 1.0,
             "tokens_per_pass": 1.0, "identical": True}]
    for (name, tau), row in totals.items():
        if name == "target only":
            continue
        tokens_per_s = row["tokens"] / row["seconds"]
        entry = {"config": name, "drafter": name, "tau": tau, "tokens_per_s": tokens_per_s, "ratio": tokens_per_s / base_tps,
                 "tokens_per_pass": row["tokens"] / max(row["passes"], 1), "identical": all(row["outputs"])}
        if row["steps"]:
            alpha = alpha_from_steps(row["steps"])
            drafted = sum(s.tau for s in row["steps"])
            d0, d = drafter_ms[name]
            costs = Costs(target_ms, d, draft_step_ms=d0, target_overhead_ms=decode_ms - target_ms[1],
                          overhead_ms=decode_ms - target_ms[1])
            entry.update({"alpha": alpha, "kept_fraction": kept_fraction_of_steps(row["steps"]),
                          "c": (1000 * row["draft_s"] / max(drafted, 1)) / per_token_ms,
                          "predicted": predicted_run_speedup(costs, alpha, [s.tau for s in row["steps"]], base["tokens"],
                                                             target_prefill_ms=target_prefill_ms,
                                                             draft_prefill_ms=drafter_prefill_ms[name])})
        rows.append(entry)
    return {"prompts": prompts, "max_new_tokens": max_new_tokens, "tokens": base["tokens"], "rows": rows,
            "target_ms": target_ms, "drafter_costs_ms": {k: {"d0": v[0], "d": v[1]} for k, v in drafter_ms.items()}}


def _pass_and_floor(report: dict, row: dict) -> str:
    """A row's one-token pass as measured before the runs (the target's T(1), a drafter's d) beside its floor."""
    floor = report.get("floor")
    if not floor:
        return ""
    if row["drafter"] is None and row["config"].startswith("target only"):
        name, target_ms = "target", report["target_ms"]
        measured = target_ms.get(1, target_ms.get("1"))
    else:
        name, measured = row["drafter"], report.get("drafter_costs_ms", {}).get(row["drafter"], {}).get("d")
    if name not in floor["ms"] or measured is None:
        return f" {'':>7s} {'':>5s}"
    return f" {measured:7.2f} {floor['ms'][name]:5.2f}"


def format_drafter_table(report: dict) -> str:
    floors = bool(report.get("floor"))
    head = (f"{'drafter':40s} {'tau':>3s} {'tokens/s':>8s} {'ratio':>6s} {'alpha':>5s} {'tok/pass':>8s} {'c':>5s} "
            f"{'predicted':>9s} {'identical':>9s}" + (f" {'pass ms':>7s} {'floor':>5s}" if floors else ""))
    lines = ([format_floors(report["floor"]), ""] if floors else []) + [head]
    for r in report["rows"]:
        tau = "" if r["tau"] is None else str(r["tau"])
        lines.append(f"{r['config']:40s} {tau:>3s} {r['tokens_per_s']:8.1f} {r['ratio']:5.2f}x {_number(r, 'alpha', '.3f'):>5s} "
                     f"{r['tokens_per_pass']:8.2f} {_number(r, 'c', '.2f'):>5s} "
                     f"{(_number(r, 'predicted', '.2f') + 'x') if 'predicted' in r else '':>9s} "
                     f"{'yes' if r['identical'] else 'NO':>9s}" + _pass_and_floor(report, r))
    best = max(report["rows"][1:], key=lambda r: r["ratio"])
    lines += ["", "alpha: acceptance probability per position (from the run); c: drafting time per drafted token over the "
                  "target-only time per token; predicted: the cost model from T(k) and the drafter's cost measured "
                  "before the runs, with the row's alpha" + ("; pass ms: one cached one-token pass measured before the "
                  "runs (the target's T(1), the drafter's d) beside its floor, the bytes it reads over the bandwidth"
                  if floors else ""),
              f"best: {best['config']}, tau={best['tau']}: {best['ratio']:.2f}x target-only greedy; all outputs identical: "
              f"{all(r['identical'] for r in report['rows'])}"]
    return "\n".join(lines)
