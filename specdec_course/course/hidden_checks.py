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
        if int(got) != expected:
            _fail(f"hidden model #{seed}, prompt of {prompt.shape[1]} tokens: expected {expected}, got {got}")


def greedy_generate(fn) -> None:
    from ..generation import autoregressive_generate

    for seed, model, prompt in _case_models(range(30, 34)):
        for n in (2, 12):
            expected = autoregressive_generate(model, prompt, n).tokens
            got = _checks()._as_list(_checks()._call(fn, model, prompt, n))
            if got != expected:
                _fail(f"hidden model #{seed}, prompt of {prompt.shape[1]} tokens, {n} new tokens: expected {expected}, got {got}")


# --------------------------------------------------------------------------- 01, 02
def draft_tokens(fn) -> None:
    from ..draft import draft_tokens as reference

    for seed, model, prompt in _case_models(range(40, 44)):
        for tau in (2, 8):
            expected = reference(model, prompt, tau).tokens
            got = _checks()._as_list(_checks()._call(fn, model, prompt, tau))
            if got != expected:
                _fail(f"hidden draft #{seed}, tau={tau}: expected {expected}, got {got}")


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


def cached_pass_gap(fn) -> None:
    from ..generation import autoregressive_generate

    checks = _checks()
    for seed, model, prompt in _case_models(range(61, 65)):  # prompts of 3 to 9 tokens
        for tau in (1, 6):
            drafts = autoregressive_generate(model, prompt, tau).tokens
            problem = checks.judge_cached_pass_gap(checks._call(fn, model, prompt, drafts),
                                                   references.cached_pass_gap(model, prompt, drafts),
                                                   f"hidden model #{seed}, tau={tau}")
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
            _fail(f"hidden case #{index}: expected {expected}, got {got!r}")


def kept_per_position(fn) -> None:
    checks = _checks()
    for seed, target, draft, prompt, n, tau, prefix_only in checks.kept_cases(range(5, 7), tau=3):
        got = checks._call(fn, target, draft, prompt, n, tau, prefix_only)
        expected = references.kept_per_position(target, draft, prompt, n, tau, prefix_only)
        if not isinstance(got, (list, tuple)) or list(got) != expected:
            _fail(f"hidden model #{seed}, tau={tau}, prefix_only={prefix_only}: expected {expected}, got {got!r}")


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
            _fail(f"hidden case #{index}: expected ({name!r}, {tau}, {speedup:.3f}), got {got!r}")


def held_out_alpha(fn) -> None:
    checks = _checks()
    for index, (draft, data) in enumerate(checks.held_out_cases(seed=5)):
        got = checks._call(fn, draft, data)
        expected = references.held_out_alpha(draft, data)
        if not _close(got, expected, 1e-9):
            _fail(f"hidden case #{index} ({len(data['tokens'])} answers): expected {expected:.4f}, got {got!r}")


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
            _fail(f"hidden case with {len(p)} drafts: expected n = {expected}, got {got}")


def _acceptance_hidden_cases():
    import torch

    cases = _checks().acceptance_cases(seed=11, count=6)
    cases.append((torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.2, 0.5, 0.3])))  # one-hot target: the rate is q(y*)
    cases.append((torch.tensor([0.25] * 4), torch.tensor([0.97, 0.01, 0.01, 0.01])))  # a peaked draft, a flat target
    return cases


def acceptance_rate(fn) -> None:
    checks = _checks()
    for index, (p, q) in enumerate(_acceptance_hidden_cases()):
        problem = checks.judge_acceptance_rate(checks._call(fn, p.clone(), q.clone()), p, q, f"hidden case #{index}")
        if problem:
            _fail(problem)


def simulate_acceptance(fn) -> None:
    checks = _checks()
    failures, varied = [], False
    for index, (p, q) in enumerate(_acceptance_hidden_cases()):
        varied |= checks.judge_simulated_rate(fn, p, q, (5_000, 30_000)[index % 2], 90 + index, f"hidden case #{index}",
                                              failures)
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
            if got is None or int(got) != int(p[n].argmax()):
                _fail(f"hidden case tau={tau}, vocabulary {vocab}, n={n}: expected {int(p[n].argmax())}, got {got}")


def sequence_after_step(fn) -> None:
    cases = [([], [3], 1, 4), ([9, 9], [9, 9, 9], 3, 9), ([1, 2], [3, 4, 5, 6], 1, 0), ([7], [8, 9], 0, 8)]
    for prefix, drafts, n, correction in cases:
        expected = prefix + drafts[:n] + [correction]
        got = _checks()._as_list(_checks()._call(fn, list(prefix), list(drafts), n, correction))
        if got != expected:
            _fail(f"hidden case prefix {prefix}, drafts {drafts}, n={n}: expected {expected}, got {got}")


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
            if tokens != expected:
                _fail(f"hidden pair #{seed}, tau={tau}, {max_new} new tokens: expected {expected}, got {tokens}")


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
            _fail(f"hidden case {layers} layers, {kv_heads} KV heads of {head_dim}, {size} bytes: expected {expected}, got {got}")


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
        if not isinstance(got, torch.Tensor) or not torch.allclose(got.reshape(expected.shape).float(), expected, atol=1e-3):
            _fail(f"hidden run of steps: {n_new} new tokens after {sequence.shape[1] - n_keep}: wrong logits")
        if cache.get_seq_length() != sequence.shape[1]:
            _fail(f"hidden run of steps: the cache holds {cache.get_seq_length()} tokens, expected {sequence.shape[1]}")


# --------------------------------------------------------------------------- 06, 07, 08
def _close(got, expected, tol=1e-6) -> bool:
    try:
        return abs(float(got) - expected) <= tol
    except (TypeError, ValueError):
        return False


def kept_fraction(fn) -> None:
    for alpha in (0.1, 0.65, 0.999):
        for tau in (2, 5, 12):
            expected = alpha * (1 - alpha ** tau) / ((1 - alpha) * tau)
            got = _checks()._call(fn, alpha, tau)
            if not _close(got, expected):
                _fail(f"hidden case alpha={alpha}, tau={tau}: expected {expected:.4f}, got {got}")


def alpha_from_steps(fn) -> None:
    for steps in ([(1, 1)], [(5, 2), (5, 5), (1, 0)], [(3, 0)] * 3 + [(3, 3)]):
        accepted = sum(n for _, n in steps)
        expected = accepted / sum(n + (n < tau) for tau, n in steps)
        got = _checks()._call(fn, steps)
        if not _close(got, expected, 1e-9):
            _fail(f"hidden case steps {steps}: expected {expected:.4f}, got {got}")


def token_gaps(fn) -> None:
    for steps in ([(5.0, 4)], [(1.5, 1), (2.5, 3), (7.0, 2)], []):
        times, clock = [], 0.0
        for ms, n in steps:
            clock += ms
            times += [clock] * n
        expected = [b - a for a, b in zip(times, times[1:])]
        got = _checks()._call(fn, steps)
        try:
            ok = len(got) == len(expected) and all(_close(a, b, 1e-9) for a, b in zip(got, expected))
        except TypeError:
            ok = False
        if not ok:
            _fail(f"hidden case steps {steps}: expected gaps {expected}, got {got!r}")


def expected_tokens_per_step(fn) -> None:
    for alpha in (0.05, 0.42, 0.97, 1.0):
        for tau in (3, 16):
            expected = tau + 1.0 if alpha == 1 else (1 - alpha ** (tau + 1)) / (1 - alpha)
            got = _checks()._call(fn, alpha, tau)
            if not _close(got, expected):
                _fail(f"hidden case alpha={alpha}, tau={tau}: expected {expected:.4f}, got {got}")


def distillation_loss(fn) -> None:
    import torch

    gen = torch.Generator().manual_seed(808)
    for n, vocab in ((3, 2), (25, 130)):
        draft_logits = torch.randn(n, vocab, generator=gen) * 3
        target_logits = torch.randn(n, vocab, generator=gen) * 3
        expected = float(torch.nn.functional.cross_entropy(draft_logits, target_logits.argmax(-1)))
        got = _checks()._call(fn, draft_logits, target_logits)
        if not _close(got, expected, 1e-4) or math.isnan(expected):
            _fail(f"hidden case {n} positions, vocabulary {vocab}: expected {expected:.4f}, got {got}")


# --------------------------------------------------------------------------- 09
def find_continuation(fn) -> None:
    rng = random.Random(909)
    for case in range(150):
        alphabet = rng.randint(2, 5)
        tokens = [rng.randrange(alphabet) for _ in range(rng.randint(0, 25))]
        tau, max_ngram = rng.randint(0, 6), rng.randint(1, 4)
        problem = _checks()._continuation_failure(fn, tokens, tau, max_ngram)
        if problem:
            _fail(f"hidden case {case}: {problem}")


def drafter_speedup(fn) -> None:
    curves = {"jump at 5": {k: 1.0 if k < 5 else 1.6 for k in range(1, 18)},
              "GPU-like": {k: 1 + 0.01 * (k - 1) for k in range(1, 18)}}
    for name, curve in curves.items():
        for alpha in (0.15, 0.6, 0.95, 1.0):
            for c in (0.01, 0.3, 1.2):
                for tau in (2, 4, 16):
                    expected = references.speedup(alpha, c, tau, curve)
                    got = _checks()._call(fn, alpha, c, tau, dict(curve))
                    if not _close(got, expected):
                        _fail(f"hidden case {name} T(k), α={alpha}, c={c}, τ={tau}: expected {expected:.4f}, got {got}")


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
                    _fail(f"hidden case {name} T(k), memory_mb={memory_mb}, max_step={max_step}, max_tau={max_tau}: "
                          f"expected {best} ({options[best]:.2f}x), got {got!r}")


def own_drafter(drafter_class) -> None:
    import torch

    from ..generation import autoregressive_generate
    from ..models import tiny_llama
    from ..speculative import speculative_generate

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
            _fail(f"hidden case: tokens {tokens}, parents {parents}, target argmax {argmax}: expected {expected}, got {got}")


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
        if shape not in values or values[shape] < values[best] - 1e-9:
            _fail(f"hidden case: alpha_of_rank {alphas}, c = {c}, max_nodes {most}: expected {best}, got {got!r}")


HIDDEN = {
    "00_autoregressive_generation": {"c04": ("greedy_next_token", greedy_next_token, 1),
                                     "c07": ("greedy_generate", greedy_generate, 1)},
    "01_greedy_draft_generation": {"c04": ("draft_tokens", draft_tokens, 1),
                                   "c09": ("kept_per_position", kept_per_position, 1)},
    "02_parallel_verification": {"c04": ("verify", verify, 1), "c09": ("cached_pass_gap", cached_pass_gap, 1)},
    "03_acceptance_rule": {"c04": ("textbook_accept", textbook_accept, 1),
                           "c10": ("acceptance_rate", acceptance_rate, 1),
                           "c13": ("simulate_acceptance", simulate_acceptance, 1)},
    "04_correction_and_the_full_loop": {"c04": ("greedy_correction", greedy_correction, 1),
                                        "c07": ("sequence_after_step", sequence_after_step, 1),
                                        "31a94244": ("speculative_greedy", speculative_greedy, 1),
                                        "c12": ("sample_corrections", sample_corrections, 1),
                                        "c15": ("first_divergence", first_divergence, 1)},
    "05_kv_caching": {"c04": ("rollback", rollback, 1), "c07": ("kv_bytes_per_token", kv_bytes_per_token, 1),
                      "6523957d": ("cache_step", cache_step, 1)},
    "06_performance_analysis": {"s0604": ("kept_fraction", kept_fraction, 1),
                                "s0607": ("alpha_from_steps", alpha_from_steps, 1)},
    "07_control_and_production": {"s0707": ("token_gaps", token_gaps, 1)},
    "08_training_a_draft_model": {"c07": ("expected_tokens_per_step", expected_tokens_per_step, 1),
                                  "c10": ("distillation_loss", distillation_loss, 1),
                                  "c15": ("choose_draft", choose_draft, 1),
                                  "c18": ("held_out_alpha", held_out_alpha, 1)},
    "09_choosing_a_drafter": {"s0904": ("find_continuation", find_continuation, 1),
                              "s0907": ("drafter_speedup", drafter_speedup, 1),
                              "s0910": ("choose_drafter", choose_drafter, 1),
                              "s0913": ("ContextBigramDrafter", own_drafter, 1)},
    "10_token_trees": {"s1004": ("tree_mask", tree_mask, 1),
                       "s1007": ("longest_accepted_path", longest_accepted_path, 1),
                       "s1010": ("best_static_shape", best_static_shape, 1)},
}


def run(exercise: str, cell_id: str, namespace: dict) -> None:
    """Run the hidden check that follows check cell ``cell_id`` on the learner's function in ``namespace``."""
    name, checker, _ = HIDDEN[exercise][cell_id]
    fn = namespace.get(name)
    if fn is None:
        _fail(f"{name} is not defined (did its cell run?)")
    checker(fn)
    print(f"✓ hidden check for {name} passed")
