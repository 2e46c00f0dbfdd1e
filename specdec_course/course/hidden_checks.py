"""Hidden checks for `python -m specdec_course grade`: more cases than the visible check cells show.

The visible checks in the exercise notebooks use fixed seeds and inputs; a learner could (by accident or not)
write a function that only works on those. The grader runs the checks below in the learner's kernel right after
the visible check cell they belong to, on other seeds, sizes and edge cases, and gives them points of their own.
They are "hidden" only in the sense that the notebooks do not show them: this file is part of the open package.

``HIDDEN[exercise][check cell id] = (function name in the notebook, checker, points)``.
"""
from __future__ import annotations

import math
import random

from . import references


def _checks():
    from . import checks

    return checks


def _fail(message: str):
    raise _checks().CheckFailed(message)


def _case_models(seeds, vocab=(40, 72, 100)):
    from ..models import tiny_llama
    import torch

    for seed in seeds:
        model = tiny_llama(seed, vocab_size=vocab[seed % len(vocab)], peaked=1.0 + seed % 3)
        gen = torch.Generator().manual_seed(1000 + seed)
        yield seed, model, torch.randint(2, model.config.vocab_size, (1, 1 + 2 * (seed % 5)), generator=gen)


# --------------------------------------------------------------------------- 00
def greedy_next_token(fn) -> None:
    import torch

    for seed, model, prompt in _case_models(range(20, 26)):
        with torch.no_grad():
            expected = int(model(prompt).logits[0, -1].argmax())
        got = _checks()._call(fn, model, prompt)
        if _as_int(got) != expected:
            _fail(f"hidden model #{seed}, prompt of {prompt.shape[1]} tokens: {got!r} is not the argmax of the logits "
                  "at the LAST position")


def greedy_generate(fn) -> None:
    from ..generation import autoregressive_generate

    for seed, model, prompt in _case_models(range(30, 34)):
        for n in (2, 12):
            expected = autoregressive_generate(model, prompt, n).tokens
            got = _checks()._as_list(_checks()._call(fn, model, prompt, n))
            if got != expected:
                _fail(f"hidden model #{seed}, prompt of {prompt.shape[1]} tokens, {n} new tokens: "
                      + _token_difference(got, expected))


def _token_difference(got, expected) -> str:
    """Where a list of tokens leaves the right one, without the right tokens."""
    if len(got) != len(expected):
        return f"{len(got)} tokens returned, not {len(expected)}"
    where = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
    return f"wrong tokens from position {where} on (0 is the first new token)"


def sample_next_tokens(fn) -> None:
    import torch

    checks = _checks()
    gen = torch.Generator().manual_seed(2024)
    cases = [(torch.randn(6, generator=gen) * 3, 0.7, 2), (torch.randn(15, generator=gen), 1.0, 15),
             (torch.randn(11, generator=gen) * 2, 3.0, None), (torch.randn(9, generator=gen) * 2, 0.0, 4),
             (torch.randn(20, generator=gen) * 2, 0.25, 6), (torch.tensor([2.0, 1.0, 0.5, 0.0]), 1.0, 3)]
    failures, varied = [], False
    for index, (logits, temperature, top_k) in enumerate(cases):
        label = f"hidden case #{index} (vocabulary {len(logits)}, temperature {temperature}, top_k {top_k})"
        varied |= checks.sampling_problem(fn, logits, temperature, top_k, (3000, 6000)[index % 2], 700 + index, label,
                                          failures)
        if failures:
            _fail(failures[0])
    if not varied:
        _fail("hidden cases: two different seeds gave the same tokens every time: draw from the generator you are given")


# --------------------------------------------------------------------------- 01, 02
def draft_tokens(fn) -> None:
    from ..draft import draft_tokens as reference

    for seed, model, prompt in _case_models(range(40, 44)):
        for tau in (2, 8):
            expected = reference(model, prompt, tau).tokens
            got = _checks()._as_list(_checks()._call(fn, model, prompt, tau))
            if got != expected:
                hint = (" (all the same: is each token conditioned on the draft tokens before it?)"
                        if len(set(got)) == 1 and len(set(expected)) > 1 else "")
                _fail(f"hidden draft #{seed}, tau={tau}: " + _token_difference(got, expected) + hint)


def verify(fn) -> None:
    import torch

    from ..generation import autoregressive_generate
    from ..verify import verify as reference

    for seed, model, prompt in _case_models(range(50, 54)):
        for tau in (1, 6):
            drafts = autoregressive_generate(model, prompt, tau).tokens
            drafts = drafts[:-1] + [(drafts[-1] + 1) % model.config.vocab_size]  # one draft the target would not pick
            expected = reference(model, prompt, drafts)
            got = _checks()._call(fn, model, prompt, drafts)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not torch.allclose(got.float(), expected, atol=1e-4):
                _fail(f"hidden model #{seed}, tau={tau}: the distributions differ from the reference")


def argmax_flips(fn) -> None:
    checks = _checks()
    cases = [checks.flip_case(50, 1, 5, 4), checks.flip_case(51, 1, 6, 4, flip_at=0),
             checks.flip_case(52, 7, 12, 2, near=2), checks.flip_case(53, 6, 8, 8, tie_at=4),
             checks.flip_case(54, 8, 16, 4, near=1, flip_at=6), checks.flip_case(55, 5, 10, 1, tie_at=0, flip_at=3),
             checks.flip_case(56, 4, 5, 16)]
    for index, (one_pass, one_by_one, bound) in enumerate(cases):
        label = f"hidden case #{index} ({one_pass.shape[0]} rows of {one_pass.shape[1]} logits, bound {bound})"
        problem = checks.flip_problem(checks._call(fn, one_pass.clone(), one_by_one.clone(), bound), one_pass,
                                      one_by_one, bound, label, hidden=True)
        if problem:
            _fail(problem)


def sample_corrections(fn) -> None:
    import torch

    from ..correction import residual

    checks = _checks()
    for index, (p, q) in enumerate(checks.residual_cases(seed=7, count=5)):
        got = checks._call(fn, p.clone(), q.clone(), 3000, torch.Generator().manual_seed(70 + index))
        problem = checks.judge_samples(got, residual(p, q), f"hidden case #{index}")
        if problem:
            _fail(problem)


def first_divergence(fn) -> None:
    checks = _checks()
    for index, (target, prompt, tokens, expected) in enumerate(checks.first_divergence_cases(range(20, 23))):
        got = checks._call(fn, target, prompt, list(tokens))
        if got != expected:
            kind = ("the target's own greedy output" if index % 3 == 0 else "its greedy output with one token changed"
                    if index % 3 == 1 else "the output of the loop that corrects from q")
            _fail(f"hidden case #{index} ({len(tokens)} tokens, {kind}): {got!r} is not where the tokens first leave the "
                  "target's greedy choice (an index into the new tokens, 0 for the first; None when none does)")


def draft_tokens_fed(fn) -> None:
    checks = _checks()
    rng = random.Random(101)
    cases = [(1, 1, [1, 1, 1]), (3, 5, [5]), (9, 3, [0, 0, 3, 3, 1]), (2, 6, [])]
    for _ in range(6):
        tau = rng.randint(1, 6)
        cases.append((rng.randint(1, 30), tau, [rng.choice([0, tau, rng.randint(0, tau)]) for _ in range(rng.randint(1, 7))]))
    for prompt_length, tau, accepted in cases:
        for use_cache in (True, False):
            label = (f"hidden case: prompt of {prompt_length} tokens, tau={tau}, accepted {accepted}, "
                     f"{'with' if use_cache else 'without'} a cache")
            problem = checks.fed_problem(checks._call(fn, prompt_length, tau, list(accepted), use_cache),
                                         prompt_length, tau, accepted, use_cache, label, hidden=True)
            if problem:
                _fail(problem)


def choose_draft(fn) -> None:
    checks = _checks()
    for index, (candidates, ratio) in enumerate(checks.choose_draft_cases(seed=9)):
        got = checks._call(fn, dict(candidates), dict(ratio))
        name, tau, speedup = references.choose_draft(candidates, ratio)
        try:
            ok = got[0] == name and int(got[1]) == tau and abs(float(got[2]) - speedup) < 1e-6
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            hint = ""
            if isinstance(got, (tuple, list)) and len(got) == 3 and got[0] == max(candidates, key=lambda k: candidates[k][0]):
                hint = " (the most accurate draft is not always the best: its cost c counts τ times per step)"
            _fail(f"hidden case #{index}, candidates {candidates}: your ({got!r}) is not the fastest (draft, τ, speedup) "
                  f"of the cost model{hint}")


def held_out_alpha(fn) -> None:
    checks = _checks()
    for index, (draft, data) in enumerate(checks.held_out_cases(seed=5)):
        got = checks._call(fn, draft, data)
        expected = references.held_out_alpha(draft, data)
        if not _close(got, expected, 1e-9):
            hint = next((f" ({why})" for why, value in checks._held_out_mistakes(draft, data).items()
                         if _close(got, value, 1e-9) and abs(value - expected) > 1e-9), "")
            _fail(f"hidden case #{index} ({len(data['tokens'])} answers): not the pooled agreement on the answer "
                  f"positions, got {got!r}{hint}")


def draft_agreement(fn) -> None:
    from ..generation import autoregressive_generate
    from ..models import tiny_llama

    for seed, model, prompt in _case_models(range(60, 64)):
        draft = tiny_llama(seed + 7, vocab_size=model.config.vocab_size, peaked=1.5)
        for n in (1, 9):
            for source in (model, draft):
                tokens = autoregressive_generate(source, prompt, n).tokens
                expected = references.draft_agreement(draft, prompt, tokens)
                got = _checks()._call(fn, draft, prompt, list(tokens))
                if not _close(got, expected, 1e-9):
                    _fail(f"hidden model #{seed}, prompt of {prompt.shape[1]} tokens, {n} target token(s) "
                          f"({'the target' if source is model else 'the draft'}'s own greedy tokens): not the share of "
                          f"target tokens the draft's argmax predicts, got {got!r} (the logits at position i predict "
                          "token i + 1: the first target token is predicted from the prompt's last position)")


def measure_draft(fn) -> None:
    checks = _checks()
    failures = []
    for index, case in enumerate(checks.measure_cases(seed=7)):
        for name in case["drafts"]:
            checks._measure(fn, case, name, failures, f"hidden case #{index}, the {name} draft", hidden=True)
            if failures:
                _fail(failures[0])


# --------------------------------------------------------------------------- 03
def textbook_accept(fn) -> None:
    rng = random.Random(303)
    cases = [([], [], []), ([0.5], [0.5], [0.99]), ([0.1, 0.9], [0.2, 0.1], [0.5, 0.0])]
    for length in (1, 2, 7, 12):
        for _ in range(10):
            cases.append(tuple([rng.random() for _ in range(length)] for _ in range(3)))
    for p, q, r in cases:
        expected = 0
        for pt, qt, rt in zip(p, q, r):
            if not (pt >= qt or rt <= pt / qt):
                break
            expected += 1
        got = _checks()._call(fn, list(p), list(q), list(r))
        if got != expected:
            hint = (" (stop at the first rejection: count only the drafts accepted before it)"
                    if got == sum(pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p, q, r)) else "")
            _fail(f"hidden case with {len(p)} drafts, p={[round(x, 3) for x in p]}, q={[round(x, 3) for x in q]}, "
                  f"r={[round(x, 3) for x in r]}: n = {got!r} is not the number of consecutive accepted drafts{hint}")


def by_hand(fn) -> None:
    checks = _checks()
    rng = random.Random(3030)
    cases = [([0.5, 0.5], [0.5, 0.5], [1.0, 1.0]), ([0.1, 0.9, 0.9], [0.6, 0.2, 0.3], [0.9, 0.1, 0.1]),
             ([0.125], [0.5], [0.25]), ([0.2, 0.05, 0.3, 0.7], [0.1, 0.4, 0.2, 0.9], [0.3, 0.1, 0.6, 0.7])]
    for length in (1, 3, 6):
        for _ in range(4):
            cases.append(tuple([round(rng.random(), 2) for _ in range(length)] for _ in range(3)))
    for p, q, r in cases:
        label = f"hidden case p={p}, q={q}, r={r}"
        problem = checks.step_problem(checks._call(fn, list(p), list(q), list(r)), p, q, r, label, hidden=True)
        if problem:
            _fail(problem)


def _acceptance_hidden_cases():
    import torch

    cases = _checks().acceptance_cases(seed=11, count=6)
    cases.append((torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.2, 0.5, 0.3])))  # one-hot target: the rate is q(y*)
    cases.append((torch.tensor([0.25] * 4), torch.tensor([0.97, 0.01, 0.01, 0.01])))  # a peaked draft, a flat target
    return cases


def acceptance_rate(fn) -> None:
    checks = _checks()
    for index, (p, q) in enumerate(_acceptance_hidden_cases()):
        problem = checks.judge_acceptance_rate(checks._call(fn, p.clone(), q.clone()), p, q, f"hidden case #{index}",
                                               hidden=True)
        if problem:
            _fail(problem)


def simulate_acceptance(fn) -> None:
    checks = _checks()
    failures, varied = [], False
    for index, (p, q) in enumerate(_acceptance_hidden_cases()):
        varied |= checks.judge_simulated_rate(fn, p, q, (5_000, 30_000)[index % 2], 90 + index, f"hidden case #{index}",
                                              failures, hidden=True)
        if failures:
            _fail(failures[0])
    if not varied:
        _fail("hidden cases: two different seeds gave the same rate every time: draw from the generator you are given")


# --------------------------------------------------------------------------- 04
def greedy_correction(fn) -> None:
    import torch

    gen = torch.Generator().manual_seed(404)
    for tau, vocab in ((0, 7), (2, 300), (8, 50)):
        p = torch.softmax(torch.randn(tau + 1, vocab, generator=gen) * 4, -1)
        for n in range(tau + 1):
            got = _checks()._call(fn, p, n)
            if _as_int(got) != int(p[n].argmax()):
                hint = (" (row n − 1 is the distribution AT the last accepted draft; the correction comes from row n)"
                        if n > 0 and _as_int(got) == int(p[n - 1].argmax()) else "")
                _fail(f"hidden case tau={tau}, vocabulary {vocab}, n={n}: {got!r} is not the target's argmax right after "
                      f"the n accepted drafts{hint}")


def sequence_after_step(fn) -> None:
    cases = [([], [3], 1, 4), ([9, 9], [9, 9, 9], 3, 9), ([1, 2], [3, 4, 5, 6], 1, 0), ([7], [8, 9], 0, 8)]
    for prefix, drafts, n, correction in cases:
        expected = prefix + drafts[:n] + [correction]
        got = _checks()._as_list(_checks()._call(fn, list(prefix), list(drafts), n, correction))
        if got != expected:
            told = ("" if len(got) == len(expected) else
                    f": {len(got)} tokens, where the prefix, n drafts and one correction make {len(expected)}")
            _fail(f"hidden case prefix {prefix}, drafts {drafts}, n={n}, correction {correction}: not the prefix, the "
                  f"first n drafts, then the correction{told}")


def speculative_greedy(fn) -> None:
    from ..generation import autoregressive_generate
    from ..models import tiny_llama
    import torch

    for seed in (60, 61, 62):
        target = tiny_llama(seed, peaked=3.0)
        draft = tiny_llama(seed, peaked=3.0) if seed == 60 else tiny_llama(seed + 7, peaked=1.5)  # 60: a perfect draft
        prompt = torch.randint(2, 64, (1, 2 + seed % 4), generator=torch.Generator().manual_seed(seed))
        for tau, max_new in ((2, 1), (4, 15)):
            expected = autoregressive_generate(target, prompt, max_new).tokens
            got = _checks()._call(fn, target, draft, prompt, max_new, tau)
            tokens = _checks()._as_list(got[0]) if isinstance(got, tuple) and len(got) == 2 else None
            if tokens is None:
                _fail(f"hidden pair #{seed}, tau={tau}, {max_new} new tokens: return (tokens, target_passes), got "
                      f"{type(got).__name__}")
            if tokens != expected:
                _fail(f"hidden pair #{seed}{' (a draft equal to the target)' if seed == 60 else ''}, tau={tau}, "
                      f"{max_new} new tokens: not the target's greedy output: " + _token_difference(tokens, expected))


# --------------------------------------------------------------------------- 05
def rollback(fn) -> None:
    import torch

    gen = torch.Generator().manual_seed(505)
    for n_layers, heads, total, size in ((2, 1, 6, 3), (4, 3, 11, 8)):
        layers = [(torch.randn(2, heads, total, size, generator=gen), torch.randn(2, heads, total, size, generator=gen))
                  for _ in range(n_layers)]
        for length in (0, 1, total - 1, total):
            got = _checks()._call(fn, [(k.clone(), v.clone()) for k, v in layers], length)
            ok = got is not None and len(got) == n_layers and all(
                torch.equal(gk, k[:, :, :length]) and torch.equal(gv, v[:, :, :length]) for (k, v), (gk, gv) in zip(layers, got))
            if not ok:
                _fail(f"hidden case: batch 2, {heads} heads, {total} positions rolled back to {length}: wrong keys/values")


def kv_bytes_per_token(fn) -> None:
    from types import SimpleNamespace

    for layers, heads, kv_heads, head_dim, size in ((1, 1, 1, 8, 1), (12, 12, 12, 64, 2), (40, 40, 8, 128, 4)):
        config = SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                 hidden_size=heads * head_dim, head_dim=head_dim)
        expected = 2 * layers * kv_heads * head_dim * size
        got = _checks()._call(fn, config, size)
        if got != expected:
            hint = (" (count the KV heads, not the query heads)" if got == 2 * layers * heads * head_dim * size else
                    " (keys AND values: two tensors per layer)" if got == layers * kv_heads * head_dim * size else "")
            _fail(f"hidden case {layers} layers, {heads} query heads, {kv_heads} KV heads of {head_dim}, {size} bytes per "
                  f"element: {got!r} is not the cache's bytes per token{hint}")


def cache_step(fn) -> None:
    import torch
    from transformers import DynamicCache

    from ..models import tiny_llama

    model = tiny_llama(70, peaked=2.0)
    gen = torch.Generator().manual_seed(70)
    prompt = torch.randint(2, 64, (1, 6), generator=gen)
    cache = DynamicCache()
    with torch.no_grad():
        model(prompt, past_key_values=cache, use_cache=True)
    sequence = prompt
    for n_new, n_keep in ((6, 1), (2, 2), (3, 0), (4, 3)):  # several steps in a row on one cache
        new = torch.randint(2, 64, (1, n_new), generator=gen)
        with torch.no_grad():
            expected = model(torch.cat([sequence, new], 1)).logits[0, sequence.shape[1]:]
        got = _checks()._call(fn, model, cache, new, sequence.shape[1] + n_keep)
        sequence = torch.cat([sequence, new[:, :n_keep]], 1)
        if (not isinstance(got, torch.Tensor) or got.numel() != expected.numel()
                or not torch.allclose(got.reshape(expected.shape).float(), expected, atol=1e-3)):
            _fail(f"hidden run of steps: {n_new} new tokens after {sequence.shape[1] - n_keep}: wrong logits")
        if cache.get_seq_length() != sequence.shape[1]:
            _fail(f"hidden run of steps: {n_new} new tokens after {sequence.shape[1] - n_keep}: after your call the cache "
                  f"holds {cache.get_seq_length()} tokens, not the `keep` it was given")


def cache_plan(fn) -> None:
    checks = _checks()
    configs = {"a 32-layer GQA model in bfloat16": {"num_hidden_layers": 32, "num_attention_heads": 32,
                                                    "num_key_value_heads": 8, "hidden_size": 4096, "head_dim": 128,
                                                    "torch_dtype": "bfloat16"},
               "a multi-query model in float16": {"num_hidden_layers": 28, "num_attention_heads": 16,
                                                  "num_key_value_heads": 1, "hidden_size": 2048, "torch_dtype": "float16"},
               "a model whose head_dim is not hidden_size / heads": {"num_hidden_layers": 18, "num_attention_heads": 8,
                                                                    "num_key_value_heads": 1, "hidden_size": 2048,
                                                                    "head_dim": 256, "torch_dtype": "bfloat16"},
               "a small multi-head model in float32": {"num_hidden_layers": 4, "num_attention_heads": 6,
                                                       "hidden_size": 384, "torch_dtype": "float32"},
               "a model with null num_key_value_heads": {"num_hidden_layers": 10, "num_attention_heads": 10,
                                                         "num_key_value_heads": None, "hidden_size": 640,
                                                         "torch_dtype": "float16"}}
    budgets = [(1, 16 * 1024 ** 3), (16, 40 * 10 ** 9), (3, 123_456_789), (7, 1)]
    for index, (name, config) in enumerate(configs.items()):
        for batch, budget in budgets[index % 2::2] + [budgets[(index + 1) % 4]]:
            label = f"hidden case: {name}, batch {batch}, budget {budget:,} bytes"
            problem = checks.plan_problem(checks._call(fn, dict(config), batch, budget), config, batch, budget, label,
                                          hidden=True)
            if problem:
                _fail(problem)


# --------------------------------------------------------------------------- 06, 07, 08
def _close(got, expected, tol=1e-6) -> bool:
    try:
        return abs(float(got) - expected) <= tol
    except (TypeError, ValueError):
        return False


def _as_int(value):
    """``value`` as an int if it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return int(value) if int(value) == value else None
    except (TypeError, ValueError, OverflowError):
        return None


def kept_fraction(fn) -> None:
    for alpha in (0.1, 0.65, 0.999):
        for tau in (2, 5, 12):
            expected = alpha * (1 - alpha ** tau) / ((1 - alpha) * tau)
            got = _checks()._call(fn, alpha, tau)
            if not _close(got, expected):
                hint = " (that is E(α, τ) − 1 without dividing by τ)" if _close(got, expected * tau) else ""
                _fail(f"hidden case alpha={alpha}, tau={tau}: wrong kept fraction{hint}")


def alpha_from_steps(fn) -> None:
    for steps in ([(1, 1)], [(5, 2), (5, 5), (1, 0)], [(3, 0)] * 3 + [(3, 3)]):
        accepted = sum(n for _, n in steps)
        expected = accepted / sum(n + (n < tau) for tau, n in steps)
        got = _checks()._call(fn, list(steps))
        if not _close(got, expected, 1e-9):
            hint = (" (that is the kept fraction: drafts after a rejection were never looked at)"
                    if _close(got, accepted / sum(tau for tau, _ in steps), 1e-9) else "")
            _fail(f"hidden case steps {steps}: wrong α{hint}")


def choose_tau(fn) -> None:
    curves = {"nearly flat": {k: 20.0 + 0.2 * (k - 1) for k in range(1, 18)},
              "linear": {k: 12.0 * k for k in range(1, 18)},
              "jump at 6": {k: 25.0 if k < 6 else 40.0 for k in range(1, 18)}}
    for name, target_ms in curves.items():
        for alpha in (0.0, 0.55, 0.97, 1.0):
            for draft_ms, max_tau in ((0.5, 16), (4.0, 5)):
                expected, scores = references.reference_choice(target_ms, draft_ms, alpha, max_tau)
                got = _checks()._call(fn, dict(target_ms), draft_ms, alpha, max_tau)
                tau = _as_int(got)
                if tau in scores and scores[tau] >= scores[expected] - 1e-9:
                    continue
                why = (f"return a τ in 1 … {max_tau}" if tau not in scores else
                       "at α = 1 every draft is accepted: E = τ + 1" if alpha == 1 else "a faster τ exists")
                _fail(f"hidden case: T(k) {name}, d={draft_ms} ms, α={alpha}, max_tau={max_tau}: τ={got!r} is not the "
                      f"fastest predicted τ ({why})")


def measure_target_ms(fn) -> None:
    from ..models import tiny_llama

    checks = _checks()
    cases = [(tiny_llama(41, vocab_size=40, hidden_size=16, num_layers=1), (5.5, 0.125), [1, 3, 6]),
             (tiny_llama(42, vocab_size=100, hidden_size=64, num_layers=3, num_heads=8, num_kv_heads=4), (80.0, 9.0), [2, 9]),
             (tiny_llama(43), (0.75, 0.0), [4, 1, 2])]
    for index, (model, (a, b), ks) in enumerate(cases):
        label = f"hidden case #{index} (a tiny model of {model.config.num_hidden_layers} layers, ks {ks})"
        failures = []
        got = checks.measure_on_clock(fn, model, ks, a, b, failures, label)
        if got is not checks._FAILED:
            failures += checks.judge_measured(got, ks, a, b, label, hidden=True)
        if failures:
            _fail(failures[0])


_TRACES: dict = {}


def _hidden_traces(run: int, only, prefix: str) -> dict:
    """Traces of ``checks.TRACE_RUNS[run]`` where the kernel can read them (``checks.scratch_folder``), made once per
    grading run and kept while they exist."""
    checks = _checks()
    key = (run, only, prefix, tuple(checks._TRACE_HOME))
    paths = _TRACES.get(key)
    if paths is None or not all(path.exists() for path in paths.values()):
        paths = _TRACES[key] = checks.fault_traces(checks.scratch_folder(), run=run, only=only, prefix=prefix)
    return paths


def time_split(fn) -> None:
    from ..perf.trace import analyse_trace

    checks = _checks()
    path = _hidden_traces(2, ("slow_draft",), "hidden")["slow_draft"]
    numbers = analyse_trace(path).numbers
    got = checks._call(fn, path)
    try:
        draft_share, verify_share = (float(x) for x in got)
    except (TypeError, ValueError):
        _fail(f"hidden trace {path.name}: return two numbers (draft share, verify share), got {type(got).__name__}")
    for name, value, expected in (("draft share", draft_share, numbers["draft_share"]),
                                  ("verify share", verify_share, numbers["verify_share"])):
        if abs(value - expected) > 1e-6:
            hint = (" (a percentage: give a fraction of total_ms)" if abs(value - 100 * expected) < 1e-3 else
                    " (the two are swapped)" if abs(draft_share - numbers["verify_share"]) < 1e-6 and
                    abs(verify_share - numbers["draft_share"]) < 1e-6 else "")
            _fail(f"hidden trace {path.name} (another run: other tiny models, τ = 2): wrong {name}{hint}")


def tau_under_budget(fn) -> None:
    checks = _checks()
    curves = {"nearly flat": {k: 20.0 + 0.5 * (k - 1) for k in range(1, 18)},
              "linear": {k: 10.0 * k for k in range(1, 18)},
              "jump at 3": {k: 18.0 if k < 3 else 30.0 for k in range(1, 18)}}
    cases = [("nearly flat", 1.0, 0.85, 9.0, 16), ("nearly flat", 1.0, 0.85, 4.0, 16), ("nearly flat", 8.0, 0.4, 21.0, 8),
             ("nearly flat", 0.5, 1.0, 1.5, 16), ("linear", 1.0, 0.9, 100.0, 10), ("linear", 1.0, 0.9, 9.0, 10),
             ("linear", 2.0, 0.2, 12.0, 6), ("jump at 3", 2.0, 0.6, 15.0, 12), ("jump at 3", 2.0, 0.6, 12.5, 12),
             ("jump at 3", 0.1, 0.99, 8.0, 3), ("jump at 3", 5.0, 0.0, 30.0, 4)]
    for index, (name, draft_ms, alpha, budget_ms, max_tau) in enumerate(cases):
        target_ms = curves[name]
        label = (f"hidden case #{index}: T(k) {name}, d = {draft_ms:g} ms, α = {alpha}, budget {budget_ms:g} ms per token, "
                 f"max_tau {max_tau}")
        got = checks._call(fn, dict(target_ms), draft_ms, alpha, budget_ms, max_tau)
        problem = checks.judge_budget(got, target_ms, draft_ms, alpha, budget_ms, max_tau, label, hidden=True)
        if problem:
            _fail(problem)


# --------------------------------------------------------------------------- 07
def grow_shrink(policy_class) -> None:
    from types import SimpleNamespace

    checks = _checks()
    for start, outcomes in ((15, [20, 20, 20, 0, 20]), (2, [0, 0, 0, 1, 1, 3, 9, 9, 0]), (9, [9, 11, 4, 16, 16, 2])):
        policy = checks._call(policy_class, start)
        tau, expected, got = start, [], []
        for n in outcomes:
            expected.append(tau)
            tau = min(16, tau + 2) if min(n, tau) == tau else max(1, tau - 1)
        for n in outcomes:
            current = checks._call(policy.next_tau)
            got.append(current)
            checks._call(policy.update, SimpleNamespace(tau=current, n_accepted=min(n, current), draft_time=0.001,
                                                         verify_time=0.01, verify_tokens=current + 1))
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            asked = _as_int(got[first])
            hint = ("" if asked is None else " (never above max_tau = 16)" if asked > 16 else " (never below 1)" if asked < 1 else "")
            _fail(f"hidden case start {start}, accepted counts {outcomes}: the τ sequence goes wrong at step {first + 1} "
                  f"(you asked for τ = {got[first]}){hint}")
    if getattr(checks._call(policy_class, 4), "max_tau", None) != 16:
        _fail("hidden case: max_tau should be 16")


def token_gaps(fn) -> None:
    for steps in ([(5.0, 4)], [(1.5, 1), (2.5, 3), (7.0, 2)], [], [(3.0, 0), (4.0, 2)]):
        times, clock = [], 0.0
        for ms, n in steps:
            clock += ms
            times += [clock] * n
        expected = [b - a for a, b in zip(times, times[1:])]
        got = _checks()._call(fn, list(steps))
        try:
            got = [float(x) for x in got]
        except (TypeError, ValueError):
            _fail(f"hidden case steps {steps}: return a list of numbers, got {type(got).__name__}")
        if len(got) != len(expected):
            _fail(f"hidden case steps {steps}: {len(got)} gaps for {len(times)} tokens (one gap fewer than tokens; "
                  "a step that emits nothing adds no token)")
        wrong = [i for i, (a, b) in enumerate(zip(got, expected)) if not _close(a, b, 1e-9)]
        if wrong:
            _fail(f"hidden case steps {steps}: gap {wrong[0] + 1} is wrong (tokens of one step arrive together)")


def capped_tau(fn) -> None:
    curves = {"steep": {k: 20.0 * (1 + 0.2 * (k - 1)) for k in range(1, 18)},
              "flat": {k: 25.0 for k in range(1, 18)},
              "jump at 5": {k: 30.0 if k < 5 else 50.0 for k in range(1, 18)}}
    for name, target_ms in curves.items():
        for alpha in (0.3, 0.9, 1.0):
            for draft_ms, bound, max_tau in ((1.5, 24.0, 16), (1.5, 41.0, 16), (3.0, 90.0, 6), (3.0, 200.0, 16),
                                             (0.5, 19.0, 8)):
                options = references.capped_options(target_ms, draft_ms, alpha, bound, max_tau)
                best = max(options.values(), default=None)
                got = _checks()._call(fn, dict(target_ms), draft_ms, alpha, bound, max_tau)
                tau = _as_int(got)
                if (tau == 0 and not options) or (tau in options and options[tau] >= best - 1e-9):
                    continue
                why = (f"return an int in 0 … {max_tau}" if tau is None or not 0 <= tau <= max_tau else
                       "no τ ≥ 1 fits: return 0, the target alone" if not options else
                       "a τ ≥ 1 fits the bound" if tau == 0 else
                       "a faster τ fits the bound too" if tau in options else "its step τ·d + T(τ+1) is above the bound")
                _fail(f"hidden case: T(k) {name}, d={draft_ms} ms, α={alpha}, bound {bound} ms, max_tau {max_tau}: "
                      f"τ={got!r} is wrong ({why})")


def diagnose(fn) -> None:
    """Traces of another run the learner never saw (other tiny models, prompt, τ and costs, new names)."""
    checks = _checks()
    paths = _hidden_traces(1, None, "incident")
    wrong = []
    for fault, path in paths.items():
        got = checks._call(fn, path)
        if got != checks.DIAGNOSES[fault]:
            wrong.append(path.name)
    if wrong:
        _fail(f"hidden traces (another run: other tiny models, prompt, τ = 4 and costs): {len(wrong)} of {len(paths)} "
              f"diagnosed wrong ({', '.join(sorted(wrong))}); read the numbers of the trace itself, with the task's "
              "rules and thresholds")


# --------------------------------------------------------------------------- 08
def expected_tokens_per_step(fn) -> None:
    for alpha in (0.05, 0.42, 0.97, 1.0):
        for tau in (3, 16):
            expected = tau + 1.0 if alpha == 1 else (1 - alpha ** (tau + 1)) / (1 - alpha)
            got = _checks()._call(fn, alpha, tau)
            if not _close(got, expected):
                hint = " (at α = 1 every draft is accepted)" if alpha == 1 else ""
                _fail(f"hidden case alpha={alpha}, tau={tau}: wrong, got {got}{hint}")


def distillation_loss(fn) -> None:
    import torch

    gen = torch.Generator().manual_seed(808)
    for n, vocab in ((3, 2), (25, 130)):
        draft_logits = torch.randn(n, vocab, generator=gen) * 3
        target_logits = torch.randn(n, vocab, generator=gen) * 3
        expected = float(torch.nn.functional.cross_entropy(draft_logits, target_logits.argmax(-1)))
        got = _checks()._call(fn, draft_logits, target_logits)
        if not _close(got, expected, 1e-4) or math.isnan(expected):
            _fail(f"hidden case {n} positions, vocabulary {vocab}: not the mean cross-entropy on the target's argmax "
                  f"labels, got {got}")


# --------------------------------------------------------------------------- 09
def find_continuation(fn) -> None:
    rng = random.Random(909)
    for case in range(150):
        alphabet = rng.randint(2, 5)
        tokens = [rng.randrange(alphabet) for _ in range(rng.randint(0, 25))]
        tau, max_ngram = rng.randint(0, 6), rng.randint(1, 4)
        problem = _checks()._continuation_failure(fn, tokens, tau, max_ngram, hidden=True)
        if problem:
            _fail(f"hidden case {case}: {problem}")


def mix_speedup(fn) -> None:
    checks = _checks()
    curves = {"jump at 5": {k: 1.0 if k < 5 else 1.6 for k in range(1, 18)},
              "GPU-like": {k: 1 + 0.01 * (k - 1) for k in range(1, 18)}}
    cases = [({"code": 0.85, "chat": 0.15}, 0.0, 3, {"code": 0.6, "chat": 0.4}),
             ({"code": 0.5, "chat": 0.35, "math": 0.7}, 0.2, 6, {"code": 0.1, "chat": 0.6, "math": 0.3}),
             ({"quote": 1.0, "open": 0.05}, 0.01, 12, {"quote": 0.9, "open": 0.1}),
             ({"a": 0.4, "b": 0.9}, 0.6, 2, {"a": 0.0, "b": 1.0})]
    for name, curve in curves.items():
        for alphas, c, tau, mix in cases:
            got = checks._call(fn, dict(alphas), c, tau, dict(curve), dict(mix))
            problem = checks._mix_problem(got, alphas, c, tau, curve, mix, hidden=True)
            if problem:
                _fail(f"hidden case {name} T(k), alphas {alphas}, c={c}, τ={tau}, mix {mix}: got {got!r}{problem}")


def choose_drafter(fn) -> None:
    table = {"big draft": {"alpha": 0.8, "c": 0.3, "memory_mb": 300}, "tiny draft": {"alpha": 0.5, "c": 0.03, "memory_mb": 12},
             "self copy": {"alpha": 1.0, "c": 0.6, "memory_mb": 90}, "lookup": {"alpha": 0.1, "c": 0.001, "memory_mb": 0},
             "too slow": {"alpha": 0.9, "c": 1.5, "memory_mb": 5}}
    curves = {"jump at 5": {k: 1.0 if k < 5 else 1.6 for k in range(1, 18)},
              "GPU-like": {k: 1 + 0.01 * (k - 1) for k in range(1, 18)}}
    for name, curve in curves.items():
        for memory_mb, max_step in ((None, None), (10, None), (100, None), (None, 1.1), (400, 1.9), (1, 0.5)):
            for max_tau in (3, 12):
                options = references.drafter_options(table, curve, memory_mb, max_step, max_tau)
                best = max(options, key=options.get)
                got = _checks()._call(fn, {k: dict(v) for k, v in table.items()}, dict(curve), memory_mb=memory_mb,
                                      max_step=max_step, max_tau=max_tau)
                try:
                    choice = (str(got[0]), int(got[1]))
                except (TypeError, ValueError, IndexError):
                    choice = None
                if choice not in options or options[choice] < options[best] - 1e-9:
                    why = ("not an allowed choice (over the memory budget or max_step, or τ out of range)"
                           if choice not in options else "an allowed choice, but not the fastest one")
                    _fail(f"hidden case {name} T(k), memory_mb={memory_mb}, max_step={max_step}, max_tau={max_tau}: "
                          f"got {got!r}: {why}")


def own_drafter(drafter_class) -> None:
    import torch

    from ..generation import autoregressive_generate
    from ..models import tiny_llama
    from ..speculative import speculative_generate

    checks = _checks()
    rng = random.Random(4141)
    cases = [("a token that was followed by 3 different tokens", [6, 1, 6, 2, 4, 6, 3, 2, 6], 4),
             ("the last token's first follower differs from its latest", [2, 9, 5, 2, 7, 9, 1, 2], 3),
             ("the only occurrence of the last token", [8, 3, 8, 3, 5], 2)]
    while len(cases) < 40:
        tokens = [rng.randrange(2 + len(cases) % 5) for _ in range(rng.randint(1, 18))]
        cases.append((f"random sequence #{len(cases)}", tokens, rng.randint(0, 6)))
    failures = []
    checks._check_drafter_proposals(checks._call(drafter_class, 90), 90, cases, "hidden case", failures, hidden=True)
    if failures:
        _fail(failures[0] + (f" (and {len(failures) - 1} more hidden sequences wrong)" if len(failures) > 1 else ""))
    for seed, vocab in ((40, 100), (41, 40)):
        target = tiny_llama(seed, vocab_size=vocab, peaked=3.0)
        drafter = _checks()._call(drafter_class, vocab)
        own = autoregressive_generate(target, [1], 20).tokens
        for prompt in ([2], [1] + own, [3, 3, 3, 3]):
            expected = autoregressive_generate(target, prompt, 30).tokens
            for tau, kind in ((8, "static"), (2, "dynamic")):
                result = _checks()._call(speculative_generate, target, drafter, torch.tensor([prompt]), 30, tau=tau,
                                         cache_kind=kind)
                if result.tokens != expected:
                    _fail(f"hidden model #{seed} (vocabulary {vocab}), prompt of {len(prompt)} tokens, τ={tau}, {kind} "
                          "cache: the output differs from the target's greedy output")



# --------------------------------------------------------------------------- 10
def tree_mask(fn) -> None:
    import torch

    from ..tree import tree_mask as reference

    checks = _checks()
    for seed in range(10, 18):
        parents = checks.random_parents(2 + seed % 9, seed)
        for prefix_length in (2, 7):
            got = checks._call(fn, list(parents), prefix_length)
            expected = reference(parents, prefix_length)
            try:
                same = torch.equal(torch.as_tensor(got).bool(), expected)
            except (TypeError, ValueError, RuntimeError):
                same = False
            if not same:
                _fail(f"hidden case: parents {parents}, prefix {prefix_length}: the mask differs from the tree's")


def longest_accepted_path(fn) -> None:
    checks = _checks()
    for tokens, parents, argmax in checks.tree_walk_cases(31, n=20):
        got = checks._call(fn, list(tokens), list(parents), list(argmax))
        expected = references.tree_walk(tokens, parents, argmax)
        try:
            got = (list(map(int, got[0])), int(got[1]))
        except (TypeError, ValueError, IndexError):
            got = None
        if got != expected:
            if got is None:
                _fail(f"hidden case: tokens {tokens}, parents {parents}: return (list of node indices, token)")
            hint = ("the path is right, the token after it is wrong" if got[0] == expected[0] else
                    "the walk stops too early (a matching child can be any sibling)"
                    if got[0] == expected[0][:len(got[0])] else "the path is wrong")
            _fail(f"hidden case: tokens {tokens}, parents {parents}, target argmax {argmax}: got {got}: {hint}")


def best_static_shape(fn) -> None:
    checks = _checks()
    cases = [((0.6, 0.2, 0.1), {k: 1 + 0.1 * (k - 1) for k in range(1, 18)}, 0.05, 9),
             ((0.2, 0.15, 0.1, 0.1), {k: 1.0 for k in range(1, 18)}, 0.0, 6),
             ((0.95, 0.03), {k: 1 + 0.02 * (k - 1) for k in range(1, 18)}, 0.3, 10)]
    for alphas, curve, c, most in cases:
        got = checks._call(fn, list(alphas), dict(curve), c, most)
        values = references.static_shape_values(alphas, curve, c, most)
        best = max(values, key=values.get)
        try:
            shape = tuple(int(w) for w in got)
        except (TypeError, ValueError):
            shape = None
        if shape not in values:
            _fail(f"hidden case: alpha_of_rank {alphas}, c = {c}, max_nodes {most}: {got!r} is not a shape of 1 … "
                  f"{most} nodes with every width at least 1")
        if values[shape] < values[best] - 1e-9:
            _fail(f"hidden case: alpha_of_rank {alphas}, c = {c}, max_nodes {most}: got {shape} ({values[shape]:.3f}x), "
                  "not the shape with the largest predicted speedup")


HIDDEN = {
    "00_autoregressive_generation": {"c04": ("greedy_next_token", greedy_next_token, 1),
                                     "c07": ("greedy_generate", greedy_generate, 2),
                                     "c12": ("sample_next_tokens", sample_next_tokens, 3)},
    "01_greedy_draft_generation": {"c04": ("draft_tokens", draft_tokens, 2),
                                   "c09": ("draft_tokens_fed", draft_tokens_fed, 3)},
    "02_parallel_verification": {"c04": ("verify", verify, 2), "c09": ("argmax_flips", argmax_flips, 2)},
    "03_acceptance_rule": {"c04": ("textbook_accept", textbook_accept, 1),
                           "0c08957b": ("by_hand", by_hand, 2),
                           "c10": ("acceptance_rate", acceptance_rate, 2),
                           "c13": ("simulate_acceptance", simulate_acceptance, 2)},
    "04_correction_and_the_full_loop": {"c04": ("greedy_correction", greedy_correction, 1),
                                        "c07": ("sequence_after_step", sequence_after_step, 1),
                                        "31a94244": ("speculative_greedy", speculative_greedy, 3),
                                        "c12": ("sample_corrections", sample_corrections, 2),
                                        "c15": ("first_divergence", first_divergence, 2)},
    "05_kv_caching": {"c04": ("rollback", rollback, 1), "c07": ("kv_bytes_per_token", kv_bytes_per_token, 1),
                      "6523957d": ("cache_step", cache_step, 2), "c12": ("cache_plan", cache_plan, 2)},
    "06_performance_analysis": {"s0604": ("kept_fraction", kept_fraction, 1),
                                "s0607": ("alpha_from_steps", alpha_from_steps, 1),
                                "s0610": ("choose_tau", choose_tau, 2),
                                "s0613": ("measure_target_ms", measure_target_ms, 2),
                                "s0617": ("time_split", time_split, 2),
                                "s0622": ("tau_under_budget", tau_under_budget, 2)},
    "07_control_and_production": {"s0704": ("GrowShrinkPolicy", grow_shrink, 2),
                                  "s0707": ("token_gaps", token_gaps, 2),
                                  "s0710": ("capped_tau", capped_tau, 2),
                                  "s0713": ("diagnose", diagnose, 3)},
    "08_training_a_draft_model": {"c04": ("draft_agreement", draft_agreement, 2),
                                  "c07": ("expected_tokens_per_step", expected_tokens_per_step, 1),
                                  "c10": ("distillation_loss", distillation_loss, 2),
                                  "c15": ("choose_draft", choose_draft, 2),
                                  "c18": ("held_out_alpha", held_out_alpha, 2),
                                  "c18b": ("measure_draft", measure_draft, 2)},
    "09_choosing_a_drafter": {"s0904": ("find_continuation", find_continuation, 2),
                              "s0907": ("mix_speedup", mix_speedup, 2),
                              "s0910": ("choose_drafter", choose_drafter, 2),
                              "s0913": ("ContextBigramDrafter", own_drafter, 3)},
    "10_token_trees": {"s1004": ("tree_mask", tree_mask, 2),
                       "s1007": ("longest_accepted_path", longest_accepted_path, 2),
                       "s1010": ("best_static_shape", best_static_shape, 3)},
}


def run(exercise: str, cell_id: str, namespace: dict) -> None:
    """Run the hidden check that follows check cell ``cell_id`` on the learner's function in ``namespace``."""
    name, checker, _ = HIDDEN[exercise][cell_id]
    fn = namespace.get(name)
    if fn is None:
        _fail(f"{name} is not defined (did its cell run?)")
    checker(fn)
    print(f"✓ hidden check for {name} passed")
