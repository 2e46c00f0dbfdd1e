"""Checks for the exercise notebooks: immediate, specific feedback on a learner's function.

Each check compares the learner's function with the package's reference on small random
models (no download, seconds to run). A stub that still raises NotImplementedError is
reported as "not attempted yet".
"""
from __future__ import annotations

import math
import random

import torch

from ..generation import autoregressive_generate
from ..models import tiny_llama
from . import references  # the reference answers: the grader hides this module from learners' kernels


class CheckFailed(AssertionError):
    """The learner's function gave a wrong result; the message says for which input."""

    def _render_traceback_(self):
        # IPython shows these lines instead of a traceback: the message is the feedback
        return ["✗ " + line for line in str(self).split("\n")[:1]] + str(self).split("\n")[1:]


class NotAttempted(CheckFailed):
    """The exercise still holds its stub."""


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted(f"{getattr(fn, '__name__', 'your function')}: not attempted yet; replace "
                           "`raise NotImplementedError()` with your code, run that cell, then this one") from None
    except CheckFailed:
        raise
    except Exception as err:
        raise CheckFailed(f"{getattr(fn, '__name__', 'your function')} raised {type(err).__name__}: {err}") from err


_FAILED = object()


def _attempt(failures: list[str], label: str, fn, *args, **kwargs):
    """Call the learner's function; on an error, note it as a failed case and return _FAILED (a stub still stops)."""
    try:
        return _call(fn, *args, **kwargs)
    except NotAttempted:
        raise
    except CheckFailed as err:
        failures.append(f"{label}: {err}")
        return _FAILED


def _all_cases(name: str, failures: list[str], total: int, ok_message: str, hint: str | None = None) -> None:
    """Report every failed case at once, a line each (at most 8), then the hint; or the success message."""
    if failures:
        shown = failures[:8] + ([f"... and {len(failures) - 8} more"] if len(failures) > 8 else [])
        raise CheckFailed(f"{name}: {len(failures)} of {total} cases wrong:\n  " + "\n  ".join(shown)
                          + (f"\nhint: {hint}" if hint else ""))
    passed(ok_message)


def _as_list(tokens) -> list[int]:
    if hasattr(tokens, "tokens"):
        tokens = tokens.tokens
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.reshape(-1).tolist()
    return [int(t) for t in tokens]


def passed(message: str) -> None:
    print(f"✓ {message}")


def _cases(n: int = 6):
    """(model, prompt) pairs on small random models of a few shapes."""
    for seed in range(n):
        model = tiny_llama(seed, vocab_size=48 + 8 * seed, peaked=2.0)
        gen = torch.Generator().manual_seed(100 + seed)
        prompt = torch.randint(2, model.config.vocab_size, (1, 3 + seed), generator=gen)
        yield seed, model, prompt


_OPEN_LOGS: list = []


class _ForwardLog:
    """Records the number of new tokens in every forward pass of a model (also those the grader's sandbox reports
    for its copy of the model, through ``record_passes``)."""

    def __init__(self, model):
        self.model, self.lengths = model, []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
        _OPEN_LOGS.append(self)

    def _hook(self, module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is not None:
            self.lengths.append(int(ids.shape[-1]))

    def close(self):
        self.handle.remove()
        _OPEN_LOGS.remove(self)


def record_passes(model, lengths: list[int]) -> None:
    """Forward passes that ran on a copy of ``model`` elsewhere (the grader's sandbox): add them to its open logs."""
    for log in _OPEN_LOGS:
        if log.model is model:
            log.lengths += [int(n) for n in lengths]


# --------------------------------------------------------------------------- exercise 00
def check_greedy_next_token(fn) -> None:
    """fn(model, input_ids) -> the id of the most likely next token."""
    failures, total = [], 0
    for seed, model, prompt in _cases():
        total += 1
        with torch.no_grad():
            expected = int(model(prompt).logits[0, -1].argmax())
        label = f"model #{seed}, prompt {prompt[0].tolist()}"
        got = _attempt(failures, label, fn, model, prompt)
        if got is _FAILED:
            continue
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            failures.append(f"{label}: return ONE token id, not a tensor of shape {tuple(got.shape)}")
        elif got is None or int(got) != expected:
            failures.append(f"{label}: expected token {expected}, got {got} (the argmax at the LAST position)")
    _all_cases("greedy_next_token", failures, total, "greedy_next_token picks the argmax of the last position on 6 random models")


def check_greedy_generate(fn) -> None:
    """fn(model, input_ids, max_new_tokens) -> the new token ids, greedy, with a KV cache."""
    failures, total = [], 0
    for seed, model, prompt in _cases():
        for max_new in (0, 1, 7):
            total += 1
            expected = autoregressive_generate(model, prompt, max_new).tokens
            label = f"model #{seed}, max_new_tokens={max_new}"
            log = _ForwardLog(model)
            try:
                got = _attempt(failures, label, fn, model, prompt, max_new)
            finally:
                log.close()
            if got is _FAILED:
                continue
            got = _as_list(got)
            if got != expected:
                failures.append(f"{label}: expected {expected}, got {got}")
            elif max_new > 1 and any(length != 1 for length in log.lengths[1:]):
                failures.append(f"{label}: the passes read {log.lengths} new tokens; with a KV cache each pass after "
                                "the first feeds ONE token")
    _all_cases("greedy_generate", failures, total,
               "greedy_generate matches the reference on 6 random models (0, 1 and 7 new tokens) and uses the KV cache")


# --------------------------------------------------------------------------- exercise 08
def check_draft_agreement(fn) -> None:
    """fn(draft, input_ids, target_tokens) -> fraction of target tokens the draft's argmax predicts (teacher forcing)."""
    from ..perf.analysis import greedy_agreement

    failures, total = [], 0
    for seed, model, prompt in _cases(4):
        target_tokens = autoregressive_generate(model, prompt, 8).tokens
        draft = tiny_llama(seed + 50, vocab_size=model.config.vocab_size, peaked=2.0)
        for tokens in (target_tokens, autoregressive_generate(draft, prompt, 8).tokens):
            total += 1
            expected = greedy_agreement(draft, prompt, tokens) / len(tokens)
            label = f"model #{seed}, target tokens {tokens}"
            got = _attempt(failures, label, fn, draft, prompt, tokens)
            if got is not _FAILED and (got is None or abs(float(got) - expected) > 1e-9):
                failures.append(f"{label}: expected {expected:.3f}, got {got}")
    _all_cases("draft_agreement", failures, total, "draft_agreement matches the reference (teacher-forced greedy agreement) on 8 cases",
               hint="feed prompt + target tokens in ONE pass; the logits at position i predict token i + 1")


def check_expected_tokens(fn) -> None:
    """fn(alpha, tau) -> (1 − α^{τ+1}) / (1 − α)."""
    from ..perf.cost_model import expected_tokens_per_step

    failures, total = [], 0
    for alpha in (0.0, 0.3, 0.5, 0.8, 0.99, 1.0):
        for tau in (1, 2, 4, 8):
            total += 1
            expected = expected_tokens_per_step(alpha, tau)
            got = _attempt(failures, f"alpha={alpha}, tau={tau}", fn, alpha, tau)
            if got is not _FAILED and (got is None or abs(float(got) - expected) > 1e-6):
                hint = " (at α = 1 every draft is accepted: τ + 1 tokens)" if alpha == 1 else ""
                failures.append(f"alpha={alpha}, tau={tau}: expected {expected:.4f}, got {got}{hint}")
    _all_cases("expected_tokens_per_step", failures, total, "expected_tokens_per_step is right for α in 0..1 and τ in 1..8")


def check_distillation_loss(fn) -> None:
    """fn(draft_logits (n, vocab), target_logits (n, vocab)) -> mean cross-entropy on the target's argmax."""
    gen = torch.Generator().manual_seed(0)
    failures, total = [], 0
    for n, vocab in ((1, 5), (7, 11), (16, 64)):
        total += 1
        draft_logits = torch.randn(n, vocab, generator=gen) * 2
        target_logits = torch.randn(n, vocab, generator=gen) * 2
        expected = float(torch.nn.functional.cross_entropy(draft_logits, target_logits.argmax(-1)))
        got = _attempt(failures, f"{n} positions, vocabulary {vocab}", fn, draft_logits, target_logits)
        if got is not _FAILED and (got is None or abs(float(got) - expected) > 1e-4):
            failures.append(f"{n} positions, vocabulary {vocab}: expected {expected:.4f}, got {got}")
    _all_cases("distillation_loss", failures, total, "distillation_loss is the cross-entropy of the draft on the target's argmax labels",
               hint="the label is the TARGET's argmax; the loss is −log softmax(draft logits)[label], averaged")


# --------------------------------------------------------------------------- exercises 01-04
def _pair_cases(n: int = 4):
    for seed in range(n):
        target = tiny_llama(seed, peaked=2.0)
        draft = tiny_llama(seed + 30, peaked=2.0)
        gen = torch.Generator().manual_seed(200 + seed)
        prompt = torch.randint(2, 64, (1, 3 + seed), generator=gen)
        yield seed, target, draft, prompt


def check_draft_tokens(fn) -> None:
    """fn(draft, input_ids, tau) -> list of τ greedy draft tokens."""
    from ..draft import draft_tokens

    failures, total = [], 0
    for seed, _, draft, prompt in _pair_cases():
        for tau in (1, 3, 6):
            total += 1
            expected = draft_tokens(draft, prompt, tau).tokens
            label = f"draft #{seed}, tau={tau}"
            got = _attempt(failures, label, fn, draft, prompt, tau)
            if got is _FAILED:
                continue
            got = _as_list(got)
            if got != expected:
                hint = ""
                if len(set(got)) == 1 and len(set(expected)) > 1:
                    hint = " (all the same: is each token conditioned on the draft tokens before it?)"
                failures.append(f"{label}: expected {expected}, got {got}{hint}")
    _all_cases("draft_tokens", failures, total, "draft_tokens proposes the same greedy tokens as the reference (τ = 1, 3, 6 on 4 models)")



def kept_cases(seeds=range(2), tau: int = 4):
    from ..models import noisy_copy

    for seed in seeds:
        target = tiny_llama(seed, peaked=2.0)
        draft = noisy_copy(target, 0.3, seed + 9)
        prompt = torch.randint(2, 64, (1, 3 + seed % 4), generator=torch.Generator().manual_seed(120 + seed))
        for prefix_only in (False, True):
            yield seed, target, draft, prompt, 14, tau, prefix_only


def check_kept_per_position(fn) -> None:
    """fn(target, draft, input_ids, n_tokens, tau, prefix_only) -> list of τ counts (see ``kept_per_position``)."""
    failures, total = [], 0
    for seed, target, draft, prompt, n, tau, prefix_only in kept_cases():
        total += 1
        label = f"model #{seed}, {'prefix-only' if prefix_only else 'correct'} drafting"
        got = _attempt(failures, label, fn, target, draft, prompt, n, tau, prefix_only)
        if got is _FAILED:
            continue
        expected = references.kept_per_position(target, draft, prompt, n, tau, prefix_only)
        counts = list(got) if isinstance(got, (list, tuple)) else None
        if counts != expected:
            hint = ""
            if counts is not None and len(counts) == tau:
                hint = (" (position 1 needs only the first draft to match, and is the same for both ways of drafting)"
                         if counts[0] != expected[0] else
                         " (a later position counts only starts whose earlier drafts all matched too)")
            failures.append(f"{label}: expected {expected}, got {got!r}{hint}")
    _all_cases("kept_per_position", failures, total, "you measured the left-out-token bug: the same first drafts, "
               "and (almost) nothing kept beyond them")



def held_out_cases(seed: int = 0):
    """(draft, held-out data) pairs on small random models: prompts and answers of different lengths, so that pooling
    differs from averaging per answer, and prompt positions differ from answer positions."""
    from ..distill import target_labels

    for case in range(3):
        vocab = 40 + 16 * case
        target = tiny_llama(600 + 10 * seed + case, vocab_size=vocab, peaked=2.0)
        gen = torch.Generator().manual_seed(700 + 10 * seed + case)
        draft = tiny_llama(600 + 10 * seed + case, vocab_size=vocab, peaked=2.0)  # the target, its output layer blurred
        with torch.no_grad():
            weight = draft.lm_head.weight
            weight += 0.6 * weight.std() * torch.randn(weight.shape, generator=gen)
        tokens, prompt_lengths = [], []
        for row in range(3 + case):
            prompt = torch.randint(2, vocab, (1, 2 + (3 * row + seed) % 6), generator=gen)
            answer = autoregressive_generate(target, prompt, 2 + (5 * row + case) % 9).tokens
            tokens.append(torch.cat([prompt[0], torch.tensor(answer)]).to(torch.int32))
            prompt_lengths.append(prompt.shape[1])
        yield draft, {"tokens": tokens, "labels": target_labels(target, tokens), "prompt_lengths": prompt_lengths}


def _held_out_mistakes(draft, data: dict) -> dict:
    """What the usual mistakes would return: averaged per answer, or counting the prompt's positions too."""
    from ..distill import label_accuracy

    per_answer = [label_accuracy(draft, {"tokens": [t], "labels": [l], "prompt_lengths": [p]})
                  for t, l, p in zip(data["tokens"], data["labels"], data["prompt_lengths"])]
    return {"the mean of each answer's agreement (weigh every position the same: pool hits over all answers)":
            sum(per_answer) / len(per_answer),
            "prompt positions counted too (the draft runs on answers: count only from the last prompt position on)":
            label_accuracy(draft, data, answers_only=False)}


def check_held_out_alpha(fn) -> None:
    """fn(draft, held_out) -> the draft's pooled greedy agreement with the target's labels on the answers."""
    failures, total = [], 0
    for index, (draft, data) in enumerate(held_out_cases()):
        total += 1
        got = _attempt(failures, f"case #{index}", fn, draft, data)
        if got is _FAILED:
            continue
        expected = references.held_out_alpha(draft, data)
        try:
            ok = abs(float(got) - expected) < 1e-9
        except (TypeError, ValueError):
            ok = False
        if not ok:
            hint = next((f" ({why})" for why, value in _held_out_mistakes(draft, data).items()
                         if isinstance(got, (int, float)) and abs(got - value) < 1e-9 and abs(value - expected) > 1e-9), "")
            failures.append(f"case #{index} ({len(data['tokens'])} answers): expected {expected:.4f}, got {got!r}{hint}")
    _all_cases("held_out_alpha", failures, total, "held_out_alpha pools the draft's agreement over every answer position")


def choose_draft_cases(seed: int = 0):
    rng = random.Random(800 + seed)
    flat = {t: 1.0 + 0.02 * t for t in range(1, 9)}
    steep = {t: 1.0 + 0.15 * t for t in range(1, 9)}
    cases = [({"tiny": (0.2, 0.01), "small": (0.55, 0.08), "large": (0.8, 0.45)}, flat),
             ({"tiny": (0.2, 0.01), "small": (0.55, 0.08), "large": (0.8, 0.45)}, steep),
             ({"copy": (0.99, 0.5), "head": (0.15, 0.05)}, flat)]
    for _ in range(3):
        candidates = {f"d{i}": (round(rng.uniform(0.05, 0.95), 2), round(rng.uniform(0.01, 0.6), 2)) for i in range(4)}
        cases.append((candidates, steep if rng.random() < 0.5 else flat))
    return cases


def check_choose_draft(fn) -> None:
    """fn(candidates {name: (alpha, c)}, verify_ratio {tau: T(tau+1)/T(1)}) -> (name, tau, predicted speedup)."""
    failures, total = [], 0
    for index, (candidates, ratio) in enumerate(choose_draft_cases()):
        total += 1
        got = _attempt(failures, f"case #{index}", fn, dict(candidates), dict(ratio))
        if got is _FAILED:
            continue
        name, tau, speedup = references.choose_draft(candidates, ratio)
        try:
            g_name, g_tau, g_speedup = got
            ok = g_name == name and int(g_tau) == tau and abs(float(g_speedup) - speedup) < 1e-6
        except (TypeError, ValueError):
            ok = False
        if not ok:
            hint = ""
            if isinstance(got, (tuple, list)) and len(got) == 3 and got[0] != name:
                alpha_pick = max(candidates, key=lambda k: candidates[k][0])
                hint = (" (the most accurate draft is not always the best: its cost c counts τ times per step)"
                        if got[0] == alpha_pick else " (compare every draft at every τ)")
            failures.append(f"case #{index} {candidates}: expected ({name!r}, {tau}, {speedup:.3f}), got {got!r}{hint}")
    _all_cases("choose_draft", failures, total, "you pick the draft and τ the cost model says are fastest")


def check_verify(fn) -> None:
    """fn(target, input_ids, draft_ids) -> (τ+1, vocab) target probabilities, from ONE forward pass."""
    from ..verify import verify

    failures, total = [], 0
    for seed, target, draft, prompt in _pair_cases():
        total += 1
        drafts = autoregressive_generate(draft, prompt, 4).tokens
        expected = verify(target, prompt, drafts)
        log = _ForwardLog(target)
        try:
            got = _attempt(failures, f"model #{seed}", fn, target, prompt, drafts)
        finally:
            log.close()
        if got is _FAILED:
            continue
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            failures.append(f"model #{seed}: expected shape {tuple(expected.shape)} (τ + 1 rows), got {shape}")
        elif not torch.allclose(got.float(), expected, atol=1e-4):
            row = int((got.float() - expected).abs().amax(-1).argmax())
            failures.append(f"model #{seed}: row {row} is not the target's distribution after prompt + {row} drafts "
                            "(softmax over the last τ + 1 positions?)")
        elif len(log.lengths) != 1:
            failures.append(f"model #{seed}: {len(log.lengths)} forward passes; verification must use ONE")
    _all_cases("verify", failures, total, "verify returns the τ + 1 target distributions from one forward pass")



def judge_cached_pass_gap(got, expected: tuple[float, float], label: str) -> str | None:
    """What is wrong with ``got`` for a case whose reference is ``expected`` (None: right)."""
    try:
        difference, margin = (float(x) for x in got)
    except (TypeError, ValueError):
        return f"{label}: expected a pair of numbers (largest difference, smallest margin), got {got!r}"
    if abs(margin - expected[1]) > 1e-4:
        return (f"{label}: smallest top-2 margin {margin:.5f}, expected {expected[1]:.5f} (the gap between the largest and "
                "the second-largest logit, smallest over the k rows of the one pass)")
    if not 0 <= difference <= 1e-3:
        return (f"{label}: largest difference {difference:.2e}: the two ways should agree up to rounding; are the "
                "one-token passes fed the same tokens at the same positions, on the cache of the prefix?")
    if difference == 0 and expected[0] > 0:
        return (f"{label}: the two ways agree exactly, but a pass over k tokens and k one-token passes round differently "
                f"here ({expected[0]:.1e}): did you compute the same pass twice instead of feeding one token at a time?")
    return None


def check_cached_pass_gap(fn) -> None:
    """fn(target, input_ids, draft_ids) -> (largest logit difference, smallest top-2 margin), two floats."""
    failures, total = [], 0
    for seed, target, draft, prompt in _pair_cases():
        total += 1
        drafts = autoregressive_generate(draft, prompt, 4).tokens
        got = _attempt(failures, f"model #{seed}", fn, target, prompt, drafts)
        if got is _FAILED:
            continue
        problem = judge_cached_pass_gap(got, references.cached_pass_gap(target, prompt, drafts), f"model #{seed}")
        if problem:
            failures.append(problem)
    _all_cases("cached_pass_gap", failures, total, "one cached pass over k tokens equals k one-token passes up to "
               "rounding, and you found how far from a tie the argmax is")


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: significance 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def judge_samples(got, probs: torch.Tensor, label: str) -> str | None:
    """What is wrong with ``got`` (a list of drawn token ids) as draws from ``probs`` (None: nothing): tokens without
    probability, or counts a chi-square test at significance 0.001 refuses."""
    try:
        draws = [int(t) for t in got]
    except (TypeError, ValueError):
        return f"{label}: expected a list of token ids, got {type(got).__name__}"
    n = len(draws)
    if n == 0:
        return f"{label}: no draws returned"
    if any(not 0 <= t < len(probs) for t in draws):
        return f"{label}: a token id outside the vocabulary of {len(probs)}"
    counts = torch.bincount(torch.tensor(draws), minlength=len(probs)).float()
    impossible = [t for t in range(len(probs)) if probs[t] == 0 and counts[t] > 0]
    if impossible:
        return (f"{label}: drew token {impossible[0]}, which the residual gives no probability (there p ≤ q: the draft "
                "already offered it enough); sample from norm(max(0, p − q)), not from p or q")
    support = probs > 0
    expected = n * probs[support]
    stat = float(((counts[support] - expected) ** 2 / expected).sum())
    df = int(support.sum()) - 1
    if df > 0 and stat > chi_square_critical(df):
        return (f"{label}: {n} draws do not follow norm(max(0, p − q)) (chi-square {stat:.0f} > {chi_square_critical(df):.0f}); "
                "sampled from p, q, or forgot to normalise?")
    return None


def residual_cases(seed: int = 0, count: int = 4):
    """(p, q) pairs over small vocabularies for the residual correction, the last one with p == q."""
    gen = torch.Generator().manual_seed(400 + seed)
    cases = []
    for i in range(count - 1):
        vocab = 5 + 2 * i
        p = torch.softmax(torch.randn(vocab, generator=gen) * 1.5, -1)
        q = torch.softmax(torch.randn(vocab, generator=gen) * 1.5, -1)
        cases.append((p, q))
    p = torch.softmax(torch.randn(6, generator=gen), -1)
    cases.append((p, p.clone()))
    return cases


def check_sample_corrections(fn) -> None:
    """fn(p_row, q_row, n, generator) -> n token ids drawn from norm(max(0, p − q)) (from p where p == q)."""
    from ..correction import residual

    failures, total = [], 0
    for index, (p, q) in enumerate(residual_cases()):
        total += 1
        got = _attempt(failures, f"case #{index}", fn, p.clone(), q.clone(), 3000, torch.Generator().manual_seed(index))
        if got is _FAILED:
            continue
        problem = judge_samples(got, residual(p, q), f"case #{index} ({'p == q' if torch.equal(p, q) else 'p ≠ q'})")
        if problem:
            failures.append(problem)
    _all_cases("sample_corrections", failures, total, "your corrections follow norm(max(0, p − q)), the part of p the "
               "draft did not cover (and p itself where p == q)")


def first_divergence_cases(seeds=range(3)):
    """(target, prompt, tokens, expected index or None) on tiny models: greedy output, one token changed, and the output
    of a loop that takes its correction from the draft's q."""
    from .. import speculative
    from ..models import noisy_copy

    cases = []
    for seed in seeds:
        target = tiny_llama(seed, peaked=2.0)
        draft = noisy_copy(target, 0.6, seed + 5)
        prompt = torch.randint(2, 64, (1, 4 + seed % 5), generator=torch.Generator().manual_seed(410 + seed))
        greedy = autoregressive_generate(target, prompt, 16).tokens
        cases.append((target, prompt, greedy, None))
        changed = list(greedy)
        changed[3 + seed % 5] = (changed[3 + seed % 5] + 1) % 64
        cases.append((target, prompt, changed, 3 + seed % 5))
        original = speculative.correction_token
        speculative.correction_token = lambda p, q, n, **kw: int(q[n].argmax()) if n < q.shape[0] else int(p[n].argmax())
        try:
            wrong = speculative.speculative_generate(target, draft, prompt, 16, tau=3).tokens
        finally:
            speculative.correction_token = original
        index = next((i for i, (a, b) in enumerate(zip(wrong, greedy)) if a != b), None)
        cases.append((target, prompt, wrong, index))
    return cases


def check_first_divergence(fn) -> None:
    """fn(target, input_ids, tokens) -> index of the first token that is not the target's greedy choice, or None;
    from ONE forward pass."""
    failures, total = [], 0
    for index, (target, prompt, tokens, expected) in enumerate(first_divergence_cases()):
        total += 1
        log = _ForwardLog(target)
        try:
            got = _attempt(failures, f"case #{index}", fn, target, prompt, list(tokens))
        finally:
            log.close()
        if got is _FAILED:
            continue
        if got != expected:
            failures.append(f"case #{index} ({len(tokens)} tokens): expected {expected}, got {got!r}" +
                            (" (an index into the new tokens, 0 for the first)" if isinstance(got, int) else ""))
        elif len(log.lengths) != 1:
            failures.append(f"case #{index}: {len(log.lengths)} forward passes; one pass over prompt + tokens gives the "
                            "target's choice at every position")
    _all_cases("first_divergence", failures, total, "you find where a run left the target's greedy path from its output, "
               "in one pass")


def check_textbook_accept(fn) -> None:
    """fn(p_tokens, q_tokens, r) -> n, the number of consecutively accepted drafts."""
    from ..accept import consecutive_accepted

    cases = [([0.8, 0.5, 0.1, 0.6, 0.9], [0.6, 0.7, 0.4, 0.3, 0.5], [0.9, 0.6, 0.3, 0.1, 0.2]),
             ([0.2, 0.9], [0.4, 0.1], [0.6, 0.0]), ([0.3, 0.3, 0.3], [0.3, 0.6, 0.9], [1.0, 0.5, 0.0]),
             ([0.05], [0.5], [0.1])]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        cases.append(tuple(torch.rand(5, generator=gen).tolist() for _ in range(3)))
    failures = []
    for p, q, r in cases:
        expected = consecutive_accepted([pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p, q, r)])
        label = f"p={[round(x, 2) for x in p]}, q={[round(x, 2) for x in q]}, r={[round(x, 2) for x in r]}"
        got = _attempt(failures, label, fn, list(p), list(q), list(r))
        if got is not _FAILED and got != expected:
            failures.append(f"{label}: expected n = {expected}, got {got}")
    _all_cases("textbook_accept", failures, len(cases), "textbook_accept counts the consecutive accepted drafts on 24 cases",
               hint="accept if p ≥ q, else if r ≤ p/q; stop at the first rejection")


def check_by_hand(fn) -> None:
    """fn() -> (verdicts, n, appended) for the worked case of exercise 03."""
    p, q, r = [0.9, 0.2, 0.1, 0.8], [0.5, 0.4, 0.5, 0.3], [0.7, 0.45, 0.3, 0.9]
    verdicts = ["A" if pt >= qt or rt <= pt / qt else "R" for pt, qt, rt in zip(p, q, r)]
    n = next((t for t, v in enumerate(verdicts) if v == "R"), len(verdicts))
    got = _call(fn)
    if not (isinstance(got, tuple) and len(got) == 3):
        raise CheckFailed("by_hand() should return three things: (verdicts, n, tokens appended)")
    failures = []
    got_verdicts = [str(v).strip().upper()[:1] for v in got[0]] if isinstance(got[0], (list, tuple)) else got[0]
    if got_verdicts != verdicts:
        wrong = [t + 1 for t, (a, b) in enumerate(zip(verdicts, got_verdicts)) if a != b] if isinstance(got_verdicts, list) else []
        failures.append(f"verdicts {got[0]!r}: wrong for token(s) {wrong or 'all'} (p ≥ q accepts; else compare r with p/q)")
    if got[1] != n:
        failures.append(f"n = {got[1]!r}: count only the consecutive accepted drafts from the start")
    if got[2] != n + 1:
        failures.append(f"tokens appended = {got[2]!r}: the kept drafts plus one token from the target")
    _all_cases("by_hand", failures, 3, "by hand: verdicts A A R A, n = 2, and 3 tokens appended (2 drafts + the correction)")


def acceptance_cases(seed: int = 0, count: int = 5):
    """(p, q) pairs over small vocabularies for exercise 03's acceptance rate: random pairs (one with zeros in p and in
    q), then p == q (every draft accepted) and disjoint supports (none accepted)."""
    gen = torch.Generator().manual_seed(300 + seed)
    cases = []
    for i in range(count - 2):
        vocab = 4 + 2 * i
        p = torch.softmax(torch.randn(vocab, generator=gen) * (1.0 + i), -1)
        q = torch.softmax(torch.randn(vocab, generator=gen) * (1.0 + i), -1)
        if i == count - 3:  # tokens one model never proposes: q(y) = 0 at one, p(y) = 0 at another
            p[0], q[1] = 0.0, 0.0
            p, q = p / p.sum(), q / q.sum()
        cases.append((p, q))
    p = torch.softmax(torch.randn(5, generator=gen), -1)
    cases.append((p, p.clone()))
    cases.append((torch.tensor([0.6, 0.4, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.3, 0.7])))
    return cases


def _acceptance_mistakes(p: torch.Tensor, q: torch.Tensor) -> dict:
    """What the usual wrong answers give for (p, q): the hint for each."""
    seen = q > 0
    ratio = torch.where(seen, p / torch.where(seen, q, torch.ones_like(q)), torch.zeros_like(p))
    return {"Σ_y min(1, p/q): that adds the probability of accepting each token as if every token were proposed; "
            "weight it by how often the draft proposes y, q(y)": float(torch.clamp(ratio, max=1)[seen].sum()),
            "p/q without the min: a probability of acceptance is at most 1": float(p[seen].sum()),
            "drafts drawn from p: the draft model proposes from q, so weight by q(y)":
                float((p * torch.clamp(ratio, max=1)).sum()),
            "a greedy draft (always argmax q): the exact rule SAMPLES each draft from q":
                float(torch.clamp(ratio, max=1)[int(q.argmax())]),
            "drafts drawn uniformly over the vocabulary: draw them from q": float(torch.clamp(ratio, max=1).mean()),
            "1 − Σ|p − q|: TV(p, q) = ½ Σ|p − q|, so the rate is 1 − ½ Σ|p − q|": float(1 - (p - q).abs().sum())}


SIMULATION_MISTAKES = ("drafts drawn from p", "a greedy draft", "drafts drawn uniformly")  # what a simulation can get wrong


def _mistake_hint(got: float, p, q, tolerance: float, simulated: bool = False) -> str | None:
    right = float(torch.minimum(p, q).sum())
    near = [(abs(got - value), hint) for hint, value in _acceptance_mistakes(p, q).items()
            if (not simulated or hint.startswith(SIMULATION_MISTAKES))
            and abs(value - right) > 2 * tolerance and abs(got - value) <= tolerance]
    return min(near)[1] if near else None  # the mistake that explains the answer best


def _as_float(got):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got)
    return None


def judge_acceptance_rate(got, p: torch.Tensor, q: torch.Tensor, label: str) -> str | None:
    """What is wrong with ``got`` as the acceptance rate of drafts drawn from q and tested against p (None: nothing)."""
    value = _as_float(got)
    if value is None:
        return f"{label}: expected a number, got {type(got).__name__}"
    expected = float(torch.minimum(p, q).sum())
    if abs(value - expected) <= 1e-5:
        return None
    hint = _mistake_hint(value, p, q, 1e-5)
    return f"{label}: expected {expected:.4f}, got {value:.4f}" + (f" ({hint})" if hint else "")


def check_acceptance_rate(fn) -> None:
    """fn(p, q) -> the probability that a draft drawn from q passes the test against p: Σ_y min(p(y), q(y))."""
    failures, cases = [], acceptance_cases()
    for index, (p, q) in enumerate(cases):
        label = f"case #{index} (vocabulary {len(p)}{', p == q' if torch.equal(p, q) else ''})"
        got = _attempt(failures, label, fn, p.clone(), q.clone())
        if got is _FAILED:
            continue
        problem = judge_acceptance_rate(got, p, q, label)
        if problem:
            failures.append(problem)
    _all_cases("acceptance_rate", failures, len(cases), "acceptance_rate gives Σ_y q(y)·min(1, p(y)/q(y)) = Σ_y min(p(y), "
               "q(y)) = 1 − TV(p, q) on every case (including p == q and disjoint supports)",
               hint="P(accept) = Σ_y P(draft = y)·P(accept | y) = Σ_y q(y)·min(1, p(y)/q(y))")


def judge_simulated_rate(fn, p: torch.Tensor, q: torch.Tensor, n: int, seed: int, label: str,
                         failures: list) -> bool:
    """Run the learner's simulation on (p, q) with n draws, twice with seed ``seed`` and once with another; note in
    ``failures`` what is wrong. Returns True when the rate varied with the seed (a simulation, not a formula)."""
    first = _attempt(failures, label, fn, p.clone(), q.clone(), n, torch.Generator().manual_seed(seed))
    if first is _FAILED:
        return False
    value = _as_float(first)
    if value is None:
        failures.append(f"{label}: expected the fraction of accepted drafts (a number), got {type(first).__name__}")
        return False
    if abs(value * n - round(value * n)) > 1e-6 * n:
        failures.append(f"{label}: {value:.6f} is not a fraction of the {n} draws: count the accepted drafts and "
                        "divide by n (a simulation, not a formula)")
        return False
    expected = float(torch.minimum(p, q).sum())
    tolerance = 4.5 * math.sqrt(max(expected * (1 - expected), 1 / n) / n)
    if abs(value - expected) > tolerance:
        hint = _mistake_hint(value, p, q, tolerance, simulated=True)
        failures.append(f"{label}: simulated {value:.4f}, but drafts from q pass with probability Σ min(p, q) = "
                        f"{expected:.4f} (± {tolerance:.4f} for {n} draws)" + (f": {hint}" if hint else ""))
        return False
    again = _as_float(_attempt(failures, label, fn, p.clone(), q.clone(), n, torch.Generator().manual_seed(seed)))
    if again != value:
        failures.append(f"{label}: the same seed gave {value} and then {again}: draw every random number (the drafts "
                        "and r) from the generator you are given")
        return False
    other = _as_float(_attempt(failures, label, fn, p.clone(), q.clone(), n, torch.Generator().manual_seed(seed + 1)))
    return other is not None and other != value


def check_simulate_acceptance(fn) -> None:
    """fn(p, q, n, generator) -> the fraction of n drafts, each drawn from q and tested against p, that pass."""
    failures, cases, varied = [], acceptance_cases(), False
    for index, (p, q) in enumerate(cases):
        label = f"case #{index} (vocabulary {len(p)}{', p == q' if torch.equal(p, q) else ''})"
        varied |= judge_simulated_rate(fn, p, q, 20_000, 30 + index, label, failures)
    if not failures and not varied:
        failures.append("every case gave the same rate for two different seeds: draw the drafts and r from the "
                        "generator you are given")
    _all_cases("simulate_acceptance", failures, len(cases), "your simulation draws drafts from q, applies the test, and "
               "its rate matches Σ min(p, q) within the spread of 20,000 draws on every case",
               hint="y = torch.multinomial(q, n, replacement=True, generator=generator); r = torch.rand(n, "
                    "generator=generator); accept where p[y] ≥ q[y] or r ≤ p[y]/q[y]")


def check_greedy_correction(fn) -> None:
    """fn(p, n) -> the target's argmax at row n."""
    gen = torch.Generator().manual_seed(1)
    failures, total = [], 0
    for tau in (1, 3, 5):
        p = torch.softmax(torch.randn(tau + 1, 20, generator=gen) * 3, -1)
        for n in range(tau + 1):
            total += 1
            got = _attempt(failures, f"tau={tau}, n={n}", fn, p, n)
            if got is not _FAILED and (got is None or int(got) != int(p[n].argmax())):
                failures.append(f"tau={tau}, n={n}: expected token {int(p[n].argmax())} (argmax of the target's row n), got {got}")
    _all_cases("greedy_correction", failures, total, "greedy_correction takes the target's argmax right after the accepted drafts")


def check_sequence_after_step(fn) -> None:
    """fn(prefix, drafts, n, correction) -> prefix + drafts[:n] + [correction]."""
    cases = [([5, 6], [7, 8, 9], 2, 4), ([1], [2, 3], 0, 9), ([1, 2, 3], [4, 5], 2, 6), ([8], [], 0, 3)]
    failures = []
    for prefix, drafts, n, correction in cases:
        expected = prefix + drafts[:n] + [correction]
        label = f"prefix {prefix}, drafts {drafts}, n={n}, correction {correction}"
        got = _attempt(failures, label, fn, list(prefix), list(drafts), n, correction)
        if got is not _FAILED and _as_list(got) != expected:
            failures.append(f"{label}: expected {expected}, got {_as_list(got)}")
    _all_cases("sequence_after_step", failures, len(cases), "sequence_after_step: prefix, then the n accepted drafts, then the correction token")


def check_speculative_loop(fn) -> None:
    """fn(target, draft, input_ids, max_new_tokens, tau) -> (tokens, target_passes): greedy speculative decoding that
    must return exactly the target's greedy tokens, with one target pass per step."""
    from ..speculative import speculative_generate

    failures, total = [], 0
    for seed, target, draft, prompt in _pair_cases():
        for tau, max_new in ((1, 9), (3, 12), (5, 7)):
            total += 1
            expected = autoregressive_generate(target, prompt, max_new).tokens
            steps = speculative_generate(target, draft, prompt, max_new, tau=tau, use_cache=False).target_passes
            label = f"model #{seed}, tau={tau}, max_new_tokens={max_new}"
            log = _ForwardLog(target)
            try:
                got = _attempt(failures, label, fn, target, draft, prompt, max_new, tau)
            finally:
                log.close()
            if got is _FAILED:
                continue
            if not (isinstance(got, tuple) and len(got) == 2):
                failures.append(f"{label}: return (tokens, target_passes), got {type(got).__name__}")
                continue
            tokens, passes = _as_list(got[0]), got[1]
            if tokens != expected:
                where = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))
                failures.append(f"{label}: differs from the target's greedy output at token {where} "
                                f"(expected {expected[where:where + 3]}, got {tokens[where:where + 3]})")
            elif passes != len(log.lengths):
                failures.append(f"{label}: you report {passes} target passes, the target ran {len(log.lengths)}")
            elif len(log.lengths) != steps:
                failures.append(f"{label}: the target ran {len(log.lengths)} passes where greedy speculative decoding "
                                f"takes {steps}: one pass per step, over all τ drafts at once")
    _all_cases("speculative_greedy", failures, total,
               "speculative_greedy reproduces the target's greedy output (τ = 1, 3, 5 on 4 random pairs), one target pass per step")


def check_loop_on_real_pair(fn, target, draft, tokenizer, prompt: str = "What are three benefits of regular exercise?",
                            max_new_tokens: int = 24, tau: int = 3) -> None:
    """Run the learner's loop on the real pair and compare with the target's own greedy output. A mismatch is
    reported with the target's top-2 logit margin there, so a near-tie is never taken for a bug."""
    from ..generation import mismatch_margin
    from ..models import chat_prompt

    ids = chat_prompt(tokenizer, prompt)
    got = _call(fn, target, draft, ids, max_new_tokens, tau)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailed(f"speculative_greedy should return (tokens, target_passes), got {type(got).__name__}")
    tokens, passes = _as_list(got[0]), int(got[1])
    reference = autoregressive_generate(target, ids, max_new_tokens).tokens
    if tokens != reference:
        where, margin = mismatch_margin(target, ids, reference, tokens)
        if margin is not None and margin < 1e-4:
            passed(f"on the real pair the outputs part at token {where}, where the target's top two logits tie "
                   f"(margin {margin:.1e}): rounding, not a bug")
            return
        raise CheckFailed(f"on the real pair your output differs from the target's greedy output at token {where} "
                          f"(target's top-2 logit margin there {margin:.3f}: a real difference, not a tie)")
    print(tokenizer.decode(tokens))
    passed(f"on the real pair: the target's own greedy output, {len(tokens)} tokens in {passes} target passes "
           f"({len(tokens) / passes:.2f} tokens per pass, τ = {tau})")


# --------------------------------------------------------------------------- exercise 05
def check_rollback(fn) -> None:
    """fn(layers, length) -> the per-layer (keys, values) with only the first ``length`` positions kept."""
    gen = torch.Generator().manual_seed(5)
    failures, total = [], 0
    for n_layers, positions in ((1, 4), (3, 9)):
        layers = [(torch.randn(1, 2, positions, 4, generator=gen), torch.randn(1, 2, positions, 4, generator=gen))
                  for _ in range(n_layers)]
        for length in range(positions + 1):
            total += 1
            label = f"{n_layers} layers, {positions} positions back to {length}"
            got = _attempt(failures, label, fn, [(k.clone(), v.clone()) for k, v in layers], length)
            if got is _FAILED:
                continue
            if got is None or len(got) != n_layers:
                failures.append(f"{label}: expected {n_layers} (keys, values) pairs, got {None if got is None else len(got)}")
                continue
            for index, ((k, v), (gk, gv)) in enumerate(zip(layers, got)):
                if tuple(gk.shape) != (1, 2, length, 4) or tuple(gv.shape) != (1, 2, length, 4):
                    failures.append(f"{label}: layer {index} has shapes {tuple(gk.shape)}, {tuple(gv.shape)}; expected "
                                    f"(1, 2, {length}, 4) (the sequence axis is dimension 2)")
                    break
                if not (torch.equal(gk, k[:, :, :length]) and torch.equal(gv, v[:, :, :length])):
                    failures.append(f"{label}: layer {index} does not keep the FIRST {length} positions")
                    break
    _all_cases("rollback", failures, total, "rollback keeps exactly the first `length` positions of every layer's keys and values")


def check_kv_bytes(fn) -> None:
    """fn(config, bytes_per_element) -> KV-cache bytes per token."""
    from types import SimpleNamespace

    failures, total = [], 0
    for layers, heads, kv_heads, hidden, size in ((30, 9, 3, 576, 4), (2, 4, 2, 32, 2), (32, 32, 8, 4096, 2)):
        total += 1
        config = SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                 hidden_size=hidden, head_dim=hidden // heads)
        expected = 2 * layers * kv_heads * (hidden // heads) * size
        label = f"{layers} layers, {kv_heads} KV heads of size {hidden // heads}, {size} bytes"
        got = _attempt(failures, label, fn, config, size)
        if got is not _FAILED and got != expected:
            failures.append(f"{label}: expected {expected}, got {got}")
    _all_cases("kv_bytes_per_token", failures, total, "kv_bytes_per_token = 2 × layers × kv_heads × head_dim × bytes per element",
               hint="keys AND values, for the KV heads (not the query heads)")


def check_cache_step(fn, model=None) -> None:
    """fn(model, cache, new_tokens, keep) -> logits of the new positions (len(new_tokens), vocab), read with the
    transformers cache ``cache`` and then rolled back so that it holds ``keep`` tokens. Checked on random models (and
    on ``model`` too when given): after the rollback, the next pass must give the logits of a pass without a cache."""
    from transformers import DynamicCache

    failures, total = [], 0
    models = [(f"model #{seed}", m, p) for seed, m, _, p in _pair_cases(3)]
    if model is not None:
        gen = torch.Generator().manual_seed(7)
        models.append(("your model", model, torch.randint(2, 1000, (1, 12), generator=gen)))
    for name, m, prompt in models:
        gen = torch.Generator().manual_seed(11)
        vocab = min(m.config.vocab_size, 1000)
        for n_new, n_keep in ((4, 2), (3, 0), (5, 5), (1, 1)):
            total += 1
            label = f"{name}: {n_new} new tokens, keep {n_keep} of them"
            new = torch.randint(2, vocab, (1, n_new), generator=gen)
            cache = DynamicCache()
            with torch.no_grad():
                m(prompt, past_key_values=cache, use_cache=True)
                full = m(torch.cat([prompt, new], dim=1)).logits[0, prompt.shape[1]:]
            keep = prompt.shape[1] + n_keep
            got = _attempt(failures, label, fn, m, cache, new, keep)
            if got is _FAILED:
                continue
            if not isinstance(got, torch.Tensor) or got.reshape(-1, full.shape[-1]).shape != full.shape:
                failures.append(f"{label}: expected logits of shape {tuple(full.shape)}, got "
                                f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
                continue
            if not torch.allclose(got.reshape(full.shape).float(), full, atol=1e-3):
                failures.append(f"{label}: the logits differ from a pass without a cache (feed only the new tokens)")
                continue
            if cache.get_seq_length() != keep:
                failures.append(f"{label}: the cache holds {cache.get_seq_length()} tokens after your call, expected {keep}")
                continue
            following = torch.randint(2, vocab, (1, 1), generator=gen)
            with torch.no_grad():
                cached = m(following, past_key_values=cache, use_cache=True).logits[0, -1]
                fresh = m(torch.cat([prompt, new[:, :n_keep], following], dim=1)).logits[0, -1]
            if not torch.allclose(cached, fresh, atol=1e-3):
                failures.append(f"{label}: the next pass after your rollback does not see the kept tokens only")
    _all_cases("cache_step", failures, total,
               "cache_step reads new tokens through a real transformers cache and rolls it back exactly"
               + (" (random models and yours)" if model is not None else ""))


# --------------------------------------------------------------------------- exercise 06
def check_kept_fraction(fn) -> None:
    """fn(alpha, tau) -> κ = α (1 − α^τ) / ((1 − α) τ), the kept fraction under independent positions."""
    from ..perf.cost_model import kept_fraction

    failures, total = [], 0
    for alpha in (0.0, 0.25, 0.5, 0.9, 1.0):
        for tau in (1, 3, 8):
            total += 1
            expected = kept_fraction(alpha, tau)
            got = _call(fn, alpha, tau)
            if got is None or abs(float(got) - expected) > 1e-6:
                hint = " (at α = 1 every draft is kept)" if alpha == 1 else (" (τ = 1: κ = α)" if tau == 1 else "")
                failures.append(f"alpha={alpha}, tau={tau}: expected {expected:.4f}, got {got}{hint}")
    _all_cases("kept_fraction", failures, total, "kept_fraction is right for α in 0..1 and τ in 1..8")


def check_alpha_from_steps(fn) -> None:
    """fn(steps) -> α estimated from [(τ, n accepted), ...]: accepted / (accepted + rejections looked at)."""
    cases = [[(4, 4)], [(4, 0)], [(2, 1), (2, 2), (2, 0)], [(1, 0), (1, 1), (3, 3), (3, 1)], [(8, 2)] * 5]
    failures = []
    for steps in cases:
        accepted = sum(n for _, n in steps)
        expected = accepted / sum(n + (n < tau) for tau, n in steps)
        got = _call(fn, steps)
        if got is None or abs(float(got) - expected) > 1e-9:
            kept = accepted / sum(tau for tau, _ in steps)
            hint = " (that is the kept fraction: drafts after a rejection were never looked at)" \
                if got is not None and abs(float(got) - kept) < 1e-9 else ""
            failures.append(f"steps {steps}: expected {expected:.4f}, got {got}{hint}")
    _all_cases("alpha_from_steps", failures, len(cases), "alpha_from_steps counts only the drafts the rule looked at")



def check_choose_tau(fn) -> None:
    """fn(target_ms, draft_ms, alpha, max_tau) -> the τ in 1..max_tau with the largest predicted speedup."""
    curves = {"flat": {k: 30.0 for k in range(1, 14)}, "steep": {k: 30.0 * (1 + 0.15 * (k - 1)) for k in range(1, 14)},
              "jump at 4": {k: 30.0 if k < 4 else 45.0 for k in range(1, 14)}}
    failures, total = [], 0
    for name, target_ms in curves.items():
        for alpha in (0.3, 0.7, 0.9):
            for draft_ms in (1.0, 6.0):
                total += 1
                expected, scores = references.reference_choice(target_ms, draft_ms, alpha, 12)
                got = _call(fn, dict(target_ms), draft_ms, alpha, 12)
                if got != expected and not (got in scores and scores[got] >= scores[expected] - 1e-9):
                    failures.append(f"T(k) {name}, d={draft_ms} ms, α={alpha}: expected τ={expected} "
                                    f"({scores[expected]:.2f}x), got {got!r}"
                                    + (f" ({scores[got]:.2f}x)" if got in scores else ""))
    _all_cases("choose_tau", failures, total, "choose_tau picks the fastest predicted τ on 18 cost curves")


def check_measured_costs(fn, model) -> dict:
    """fn(model, ks) -> {k: ms of one cached pass over k new tokens}; checked for shape and against a fresh T(1)."""
    from ..generation import forward_time

    ks = [1, 2, 4, 8]
    got = _call(fn, model, ks)
    if not isinstance(got, dict) or sorted(got) != ks:
        raise CheckFailed(f"measure_target_ms should return a dict with keys {ks}, got {got!r}")
    failures = [f"k={k}: {v!r} is not a positive number of milliseconds" for k, v in got.items()
                if not isinstance(v, (int, float)) or v <= 0]
    reference = 1000 * forward_time(model, 64, 1, repeats=3)
    if not failures and not 0.33 * reference <= got[1] <= 3 * reference:
        failures.append(f"T(1) = {got[1]:.2f} ms but a fresh measurement gives {reference:.2f} ms: are these milliseconds "
                        "of ONE cached pass (not seconds, not a whole generation)?")
    if not failures and got[8] < 0.7 * got[1]:
        failures.append(f"T(8) = {got[8]:.2f} ms is much less than T(1) = {got[1]:.2f} ms: feed k NEW tokens after a cached prefix")
    _all_cases("measure_target_ms", failures, len(ks), f"measured T(k) looks right (fresh T(1) = {reference:.1f} ms)")
    return got


def check_time_split(fn, trace_path) -> None:
    """fn(trace_path) -> (draft share, verify share) of the run's total time."""
    from ..perf.trace import analyse_trace

    numbers = analyse_trace(trace_path).numbers
    got = _call(fn, trace_path)
    try:
        draft_share, verify_share = (float(x) for x in got)
    except (TypeError, ValueError):
        raise CheckFailed(f"time_split should return two numbers (draft share, verify share), got {got!r}") from None
    failures = []
    for name, value, expected in (("draft share", draft_share, numbers["draft_share"]),
                                  ("verify share", verify_share, numbers["verify_share"])):
        if abs(value - expected) > 1e-6:
            hint = " (give a fraction of the summary's total_ms, not a percentage)" if abs(value - 100 * expected) < 1e-3 else ""
            failures.append(f"{name}: expected {expected:.4f}, got {value:.4f}{hint}")
    _all_cases("time_split", failures, 2, f"time_split: drafting {100 * numbers['draft_share']:.0f}%, "
                                          f"verification {100 * numbers['verify_share']:.0f}% of the run")


# --------------------------------------------------------------------------- exercise 07
def check_grow_shrink(policy_class) -> None:
    """policy_class(start) -> an object with next_tau(), update(step), max_tau: the grow/shrink rule (+2 / −1, ≥ 1)."""
    from types import SimpleNamespace

    from ..speculative import speculative_generate

    failures, total = [], 0
    for start, outcomes in ((5, [0, 0, 3, 5, 0, 0, 0, 0, 0, 0]), (1, [1, 3, 0, 5, 7, 0])):
        policy = _call(policy_class, start)
        tau, expected = start, []
        for n in outcomes:
            expected.append(tau)
            accepted = min(n, tau)
            tau = tau + 2 if accepted == tau else max(1, tau - 1)
        got = []
        for n in outcomes:
            current = _call(policy.next_tau)
            got.append(current)
            _call(policy.update, SimpleNamespace(tau=current, n_accepted=min(n, current), draft_time=0.001,
                                                 verify_time=0.01, verify_tokens=current + 1))
        total += 1
        if got != expected:
            failures.append(f"start {start}, accepted counts {outcomes}: expected τ sequence {expected}, got {got}")
    target = tiny_llama(3, vocab_size=64, peaked=2.0)
    draft = tiny_llama(4, vocab_size=64, peaked=2.0)
    prompt = torch.tensor([[5, 9, 11]])
    total += 1
    policy = _call(policy_class, 3)
    if not hasattr(policy, "max_tau"):
        failures.append("the policy needs a max_tau attribute (the largest τ it may ask for, e.g. 16)")
    else:
        result = speculative_generate(target, draft, prompt, 20, tau=policy)
        if result.tokens != autoregressive_generate(target, prompt, 20).tokens:
            failures.append("speculative_generate with your policy did not reproduce target greedy")
    _all_cases("GrowShrink", failures, total, "your policy follows the grow/shrink rule and runs in speculative_generate")


def check_token_gaps(fn) -> None:
    """fn(steps) -> gaps in ms between consecutive tokens, from [(step ms, tokens emitted), ...]."""
    cases = [[(10.0, 1), (10.0, 1)], [(30.0, 3), (20.0, 1)], [(12.0, 2), (8.0, 2), (5.0, 1)], [(40.0, 1)]]
    failures = []
    for steps in cases:
        times, clock = [], 0.0
        for ms, n in steps:
            clock += ms
            times += [clock] * n
        expected = [b - a for a, b in zip(times, times[1:])]
        got = _call(fn, steps)
        try:
            ok = got is not None and len(got) == len(expected) and all(abs(float(a) - b) < 1e-9 for a, b in zip(got, expected))
        except TypeError:
            ok = False
        if not ok:
            failures.append(f"steps {steps}: expected gaps {expected}, got {got!r}"
                            + (" (the tokens of one step arrive together: gaps of 0 inside a step)" if 0.0 in expected else ""))
    _all_cases("token_gaps", failures, len(cases), "token_gaps: bursts inside a step, a whole step between bursts")


def check_capped_tau(fn) -> None:
    """fn(target_ms, draft_ms, alpha, max_step_ms, max_tau) -> fastest τ whose step τ·d + T(τ+1) fits; 0 (the target
    alone) if no τ ≥ 1 does."""
    from ..perf.cost_model import Costs, expected_tokens_per_step

    target_ms = {k: 30.0 * (1 + 0.05 * (k - 1)) for k in range(1, 14)}
    failures, total = [], 0
    for alpha in (0.4, 0.8, 0.95):
        for bound in (20.0, 36.0, 45.0, 80.0):
            total += 1
            costs = Costs(target_ms, 2.0)
            fitting = [t for t in range(1, 13) if costs.step_ms(t) <= bound]
            expected = max(fitting, key=lambda t: costs.speedup(expected_tokens_per_step(alpha, t), t)) if fitting else 0
            got = _call(fn, dict(target_ms), 2.0, alpha, bound, 12)
            if got != expected:
                failures.append(f"α={alpha}, bound {bound} ms: expected τ={expected}, got {got!r}"
                                + (" (no τ fits: return 0, the target alone)" if not fitting else ""))
    _all_cases("capped_tau", failures, total, "capped_tau respects the step bound and is fastest within it")


def fault_traces(folder) -> dict:
    """{fault name or "healthy": trace path} for each fault of ``faults.FAULTS``, on tiny models (a few seconds)."""
    from pathlib import Path

    from ..perf import clock, faults
    from ..speculative import speculative_generate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ..models import noisy_copy

    target = tiny_llama(0, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.1, seed=1)  # usually, not always, right
    prompt = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    paths = {}
    runs = ("healthy",) + faults.FAULTS
    order = torch.randperm(len(runs), generator=torch.Generator().manual_seed(7)).tolist()  # names that tell nothing
    # timed on a simulated clock where the tiny pair costs what the real pair costs: the same traces on every machine
    with clock.simulated_costs(target, draft):
        for fault, number in zip(runs, order):
            path = paths[fault] = folder / f"run_{number + 1}.jsonl"
            if fault == "healthy":
                speculative_generate(target, draft, prompt, 32, tau=3, trace=path)
            elif fault == "no_chat_template":
                speculative_generate(target, draft, prompt, 32, tau=3, trace=path, draft_input_ids=prompt[:, 5:])
            else:
                with faults.injected(fault, target, draft):
                    speculative_generate(target, draft, prompt, 32, tau=3, trace=path)
    return paths


def check_diagnose(fn, paths: dict) -> None:
    """fn(trace_path) -> the name of the main problem (a key of trace.FINDINGS) or "none" for a healthy run."""
    expected = {"healthy": "none", "no_chat_template": "prompt_mismatch", "slow_draft": "slow_draft",
                "token_by_token_verification": "verification_not_one_pass", "slow_kernels": "slow_kernels",
                "stale_cache": "stale_cache"}
    failures = []
    for name, path in paths.items():
        got = _call(fn, path)
        if got != expected[name]:
            failures.append(f"trace {path.name}: expected {expected[name]!r}, got {got!r}")
    _all_cases("diagnose", failures, len(paths), "diagnose names every fault from its trace, and calls the healthy run healthy")


# --------------------------------------------------------------------------- exercise 09
FIND_CONTINUATION_CASES = [  # (tokens, τ, max_ngram): what each case is about
    ([1, 2, 3, 9, 1, 2, 3], 3, 3),           # the whole tail occurred before
    ([1, 2, 7, 1, 2, 8, 5, 1, 2], 3, 3),     # two earlier occurrences: the most recent one counts
    ([7, 5, 6, 1, 8, 6, 2, 7, 5, 6], 3, 3),  # the longest n-gram wins over a more recent shorter one
    ([1, 2, 3, 8, 2, 3, 9, 1, 2, 3], 3, 2),  # max_ngram limits n
    ([1, 2, 3, 8, 2, 3, 9, 1, 2, 3], 3, 1),
    ([3, 4, 3], 5, 3),                       # fewer than τ tokens follow the match
    ([2, 2, 2, 2], 3, 3),                    # the match overlaps the tail
    ([1, 2, 3, 4], 3, 3),                    # nothing repeats
    ([5], 2, 3), ([], 2, 3),                 # too short to repeat
    ([4, 1, 4, 1, 4], 0, 3),                 # τ = 0
]



def _continuation_failure(fn, tokens, tau, max_ngram) -> str | None:
    """None if ``fn`` gives the reference continuation, else what went wrong (with the likely mistake named)."""
    from ..drafters import find_continuation as reference

    expected = reference(list(tokens), tau, max_ngram=max_ngram)
    got = _call(fn, list(tokens), tau, max_ngram=max_ngram)
    try:
        got = _as_list(got)
    except (TypeError, ValueError):
        return f"tokens {tokens}, tau={tau}, max_ngram={max_ngram}: return a list of token ids, got {got!r}"
    if got == expected:
        return None
    hint = ""
    if got == references.continuation(tokens, tau, max_ngram, oldest=True):
        hint = " (that follows the OLDEST occurrence: take the most recent one)"
    elif got == references.continuation(tokens, tau, max_ngram, shortest_first=True):
        hint = " (a shorter n-gram won: try the LONGEST n-gram first)"
    elif len(got) > tau:
        hint = f" (at most τ = {tau} tokens)"
    return f"tokens {tokens}, tau={tau}, max_ngram={max_ngram}: expected {expected}, got {got}{hint}"


def check_find_continuation(fn) -> None:
    """fn(tokens, tau, max_ngram=3) -> up to τ tokens that followed the most recent earlier occurrence of the longest
    n-gram (n = max_ngram … 1) ending ``tokens``; [] when none occurred before."""
    failures = []
    for tokens, tau, max_ngram in FIND_CONTINUATION_CASES:
        try:
            problem = _continuation_failure(fn, tokens, tau, max_ngram)
        except NotAttempted:
            raise
        except CheckFailed as err:
            problem = f"tokens {tokens}, tau={tau}, max_ngram={max_ngram}: {err}"
        if problem:
            failures.append(problem)
    _all_cases("find_continuation", failures, len(FIND_CONTINUATION_CASES),
               f"find_continuation proposes what prompt lookup proposes on {len(FIND_CONTINUATION_CASES)} hand-made sequences",
               hint="n from max_ngram down to 1; for each n, look for the tail's earlier occurrences from the most recent "
                    "back; the match must end before the last token, so that something follows it")


COST_CURVES = {  # T(k)/T(1) for k = 1 … 9
    "flat": {k: 1.0 for k in range(1, 10)},
    "CPU-like": {1: 1.0, 2: 1.08, 3: 1.17, 4: 1.40, 5: 1.43, 6: 1.52, 7: 1.59, 8: 1.62, 9: 1.64},
    "steep": {k: 1 + 0.25 * (k - 1) for k in range(1, 10)},
}



def check_drafter_speedup(speedup_fn, best_tau_fn) -> None:
    """speedup_fn(alpha, c, tau, cost_curve) -> E(α, τ) / (τ·c + T(τ+1)/T(1)); best_tau_fn(alpha, c, cost_curve,
    max_tau) -> the τ in 1 … max_tau with the largest predicted speedup. Compared with ``cost_model.Costs``."""
    from ..perf.cost_model import expected_tokens_per_step

    failures, total = [], 0
    for name, curve in COST_CURVES.items():
        for alpha in (0.0, 0.3, 0.7, 0.99, 1.0):
            for c in (0.0, 0.05, 0.5):
                for tau in (1, 3, 8):
                    total += 1
                    expected = references.speedup(alpha, c, tau, curve)
                    label = f"{name} T(k), α={alpha}, c={c}, τ={tau}"
                    got = _attempt(failures, label, speedup_fn, alpha, c, tau, dict(curve))
                    if got is _FAILED:
                        continue
                    try:
                        value = float(got)
                    except (TypeError, ValueError):
                        failures.append(f"{label}: return a number, got {got!r}")
                        continue
                    if abs(value - expected) > 1e-6:
                        e = expected_tokens_per_step(alpha, tau)
                        hint = ""
                        if abs(value - e / (tau * c + curve[tau])) < 1e-9:
                            hint = " (the target reads τ drafts AND one more position: T(τ + 1), not T(τ))"
                        elif abs(value - e / (tau * c + 1)) < 1e-9:
                            hint = " (verification costs T(τ+1)/T(1), which is 1 only on a flat curve)"
                        elif alpha == 1:
                            hint = " (at α = 1 every draft is accepted: τ + 1 tokens per step)"
                        failures.append(f"{label}: expected {expected:.4f}, got {value:.4f}{hint}")
    for name, curve in COST_CURVES.items():
        for alpha in (0.3, 0.8, 0.99):
            for c in (0.02, 0.5):
                total += 1
                scores = {t: references.speedup(alpha, c, t, curve) for t in range(1, 9)}
                best = max(scores, key=scores.get)
                label = f"best τ for {name} T(k), α={alpha}, c={c}"
                got = _attempt(failures, label, best_tau_fn, alpha, c, dict(curve), 8)
                if got is _FAILED:
                    continue
                if got not in scores or scores[got] < scores[best] - 1e-9:
                    failures.append(f"{label}: expected τ = {best} ({scores[best]:.2f}x), got {got!r}"
                                    + (f" ({scores[got]:.2f}x)" if got in scores else " (a τ in 1 … max_tau)"))
    _all_cases("drafter_speedup / best_tau", failures, total,
               "drafter_speedup agrees with the cost model, and best_tau picks the fastest τ, on 3 cost curves")


DRAFTER_TABLE = {  # α, c and extra memory of four drafters: the kind of numbers notebook 09 measures
    "draft model": {"alpha": 0.45, "c": 0.10, "memory_mb": 47},
    "quantized copy": {"alpha": 0.99, "c": 0.55, "memory_mb": 84},
    "two-level": {"alpha": 0.99, "c": 0.70, "memory_mb": 131},
    "prompt lookup": {"alpha": 0.2, "c": 0.002, "memory_mb": 0},
}



def check_choose_drafter(fn) -> None:
    """fn(table, cost_curve, memory_mb=None, max_step=None, max_tau=8) -> (drafter name, τ) with the largest predicted
    speedup among the drafters that fit the memory budget and the τ whose step fits ``max_step`` (in units of T(1));
    ("target only", 0) when nothing is predicted faster than the target alone."""
    weak = {name: dict(row, alpha=0.05) for name, row in DRAFTER_TABLE.items()}
    cases = []
    for curve_name in ("flat", "CPU-like"):
        for memory_mb, max_step in ((None, None), (50, None), (100, None), (0, None), (None, 1.6), (None, 1.25),
                                    (90, 2.0), (None, 0.9)):
            cases.append((DRAFTER_TABLE, curve_name, memory_mb, max_step))
    cases += [(weak, "CPU-like", None, None), (weak, "flat", 0, None)]
    failures = []
    for table, curve_name, memory_mb, max_step in cases:
        curve = COST_CURVES[curve_name]
        options = references.drafter_options(table, curve, memory_mb, max_step, 8)
        best = max(options, key=options.get)
        label = (f"{'weak drafters' if table is weak else 'the table'}, {curve_name} T(k), memory_mb={memory_mb}, "
                 f"max_step={max_step}")
        got = _attempt(failures, label, fn, {k: dict(v) for k, v in table.items()}, dict(curve), memory_mb=memory_mb,
                       max_step=max_step, max_tau=8)
        if got is _FAILED:
            continue
        try:
            name, tau = got
            choice = (str(name), int(tau))
        except (TypeError, ValueError):
            failures.append(f"{label}: return (drafter name, τ), got {got!r}")
            continue
        if choice in options and options[choice] >= options[best] - 1e-9:
            continue
        hint = ""
        if choice[0] in table and memory_mb is not None and table[choice[0]]["memory_mb"] > memory_mb:
            hint = f" ({choice[0]} needs {table[choice[0]]['memory_mb']} MB; the budget is {memory_mb} MB)"
        elif choice[0] in table and max_step is not None and 1 <= choice[1] <= 8 \
                and choice[1] * table[choice[0]]["c"] + curve[choice[1] + 1] > max_step:
            hint = f" (its step costs {choice[1] * table[choice[0]]['c'] + curve[choice[1] + 1]:.2f} T(1) > max_step)"
        elif best == ("target only", 0):
            hint = " (nothing is predicted faster than the target alone: return ('target only', 0))"
        failures.append(f"{label}: expected {best} ({options[best]:.2f}x), got {got!r}"
                        + (f" ({options[choice]:.2f}x)" if choice in options else "") + hint)
    _all_cases("choose_drafter", failures, len(cases),
               f"choose_drafter picks the fastest allowed drafter and τ on {len(cases)} budgets and cost curves")


def _check_drafter_proposals(drafter, vocab_size: int, sequences, label: str, failures: list) -> tuple[int, int]:
    """Call ``propose`` directly and check the Draft it returns: at most τ tokens, one row of q per token, each row a
    distribution that gives its token a positive probability. Returns (cases, tokens proposed); one failure per case."""
    cases = proposed = 0
    for sequence in sequences:
        ids = torch.tensor([sequence])
        for tau in (1, 4):
            cases += 1
            where = f"{label}, propose(sequence of {len(sequence)} tokens, tau={tau})"
            if _attempt(failures, where, drafter.start, ids, max_length=len(sequence) + 16) is _FAILED:
                continue
            draft = _attempt(failures, where, drafter.propose, ids, tau)
            if draft is _FAILED:
                continue
            tokens, q = getattr(draft, "tokens", None), getattr(draft, "q", None)
            if not isinstance(tokens, list) or not isinstance(q, torch.Tensor):
                failures.append(f"{where}: return a Draft(tokens=[...], q=tensor), got {type(draft).__name__}")
            elif len(tokens) > tau:
                failures.append(f"{where}: {len(tokens)} tokens; propose at most τ")
            elif tuple(q.shape) != (len(tokens), vocab_size):
                failures.append(f"{where}: q has shape {tuple(q.shape)}, expected ({len(tokens)}, {vocab_size}): one row "
                                "per proposed token, over the whole vocabulary")
            elif len(tokens) and ((q < 0).any() or not torch.allclose(q.float().sum(-1), torch.ones(len(tokens)), atol=1e-4)):
                failures.append(f"{where}: each row of q must be a probability distribution (non-negative, summing to 1)")
            elif any(float(q[t, int(y)]) <= 0 for t, y in enumerate(tokens)):
                failures.append(f"{where}: q gives a proposed token probability 0; the sampling rule divides by q(ŷ)")
            else:
                proposed += len(tokens)
    return cases, proposed


def check_own_drafter(drafter_class) -> None:
    """drafter_class(vocab_size) -> a Drafter. Its proposals must be well formed (at most τ tokens, q rows that are
    distributions giving their token a positive probability), and speculative decoding with it must reproduce the
    target's greedy output exactly, with and without a cache, at τ = 1, 3, 5; a sampling run must work too."""
    from ..speculative import speculative_generate

    failures, total, drafted, accepted, proposed = [], 0, 0, 0, 0
    repeating = [5, 9, 3, 7, 5, 9, 3, 11, 5, 9]
    for seed in range(3):
        target = tiny_llama(seed, peaked=2.0)
        vocab = target.config.vocab_size
        drafter = _call(drafter_class, vocab)
        label = f"model #{seed}"
        random_prompt = torch.randint(2, vocab, (8,), generator=torch.Generator().manual_seed(900 + seed)).tolist()
        own = autoregressive_generate(target, [3, 4], 14).tokens  # the target's own text: it often repeats itself
        before = len(failures)
        cases, tokens = _check_drafter_proposals(drafter, vocab, [repeating, random_prompt, [3, 4] + own, [7]], label,
                                                 failures)
        total, proposed = total + cases, proposed + tokens
        if len(failures) > before:
            continue
        for prompt in (repeating, [3, 4] + own[:6]):
            expected = autoregressive_generate(target, prompt, 20).tokens
            for tau, use_cache in ((1, True), (3, True), (5, True), (3, False)):
                total += 1
                where = f"{label}, prompt {prompt[:6]}…, tau={tau}, cache {'on' if use_cache else 'off'}"
                result = _attempt(failures, where, speculative_generate, target, drafter, torch.tensor([prompt]), 20,
                                  tau=tau, use_cache=use_cache)
                if result is _FAILED:
                    continue
                if result.tokens != expected:
                    at = next((i for i, (a, b) in enumerate(zip(result.tokens, expected)) if a != b),
                              min(len(result.tokens), len(expected)))
                    failures.append(f"{where}: the output differs from the target's greedy output at token {at}")
                    continue
                drafted += result.drafted
                accepted += sum(s.n_accepted for s in result.steps)
        total += 1
        where = f"{label}, sampling rule"
        _attempt(failures, where, speculative_generate, target, drafter, torch.tensor([repeating]), 12, tau=3,
                 rule="sampling", temperature=1.0, seed=seed)
    if not failures and proposed + drafted == 0:
        failures.append("your drafter never proposed a token: a step then verifies nothing (correct, but no drafter)")
        total += 1
    _all_cases(getattr(drafter_class, "__name__", "your drafter"), failures, total,
               f"your drafter keeps the target's greedy output on 3 tiny models (τ = 1, 3, 5, cache on and off), its "
               f"proposals are well formed, and sampling runs; in the greedy runs the target accepted {accepted} of its "
               f"{drafted} drafts")


# --------------------------------------------------------------------------- 10 · token trees
def random_parents(m: int, seed: int) -> list[int]:
    """The parents of a random tree of m nodes, in an order where every parent comes before its children."""
    rng = random.Random(seed)
    return [rng.randrange(-1, i) for i in range(m)]


TREE_SHAPES = {"one node": [-1], "a chain of 4": [-1, 0, 1, 2], "4 siblings": [-1, -1, -1, -1],
               "the notebook's tree": [-1, -1, 0, 0, 1], "a static 3-2-1": [-1, -1, -1, 0, 0, 3],
               **{f"random tree #{s} of {4 + s} nodes": random_parents(4 + s, s) for s in range(5)}}


def check_tree_mask(fn) -> None:
    """fn(parents, prefix_length) -> (m, prefix_length + m) booleans: row i is True at every prefix position, at node
    i itself and at each of its ancestors, False elsewhere."""
    from ..tree import tree_mask

    failures, total = [], 0
    for name, parents in TREE_SHAPES.items():
        for prefix_length in (1, 3):
            total += 1
            label = f"{name}, parents {parents}, prefix {prefix_length}"
            got = _attempt(failures, label, fn, list(parents), prefix_length)
            if got is _FAILED:
                continue
            expected = tree_mask(parents, prefix_length)
            try:
                got = torch.as_tensor(got).bool()
            except (TypeError, ValueError, RuntimeError):
                failures.append(f"{label}: return a tensor of booleans, got {type(got).__name__}")
                continue
            if tuple(got.shape) != tuple(expected.shape):
                failures.append(f"{label}: expected shape {tuple(expected.shape)} (nodes × (prefix + nodes)), "
                                f"got {tuple(got.shape)}")
                continue
            wrong = (got != expected).nonzero().tolist()
            if wrong:
                i, j = wrong[0]
                what = (f"prefix position {j}" if j < prefix_length else f"node {j - prefix_length}")
                should = "see" if expected[i, j] else "not see"
                hint = ""
                if j >= prefix_length and j - prefix_length == i:
                    hint = " (a node attends to itself, as in a causal mask)"
                elif j >= prefix_length and not expected[i, j] and j - prefix_length < i:
                    hint = " (an earlier node that is not an ancestor: a sibling or a cousin is another continuation)"
                failures.append(f"{label}: node {i} should {should} {what}{hint}")
    _all_cases("tree_mask", failures, total, f"tree_mask is right on {total} trees (chains, stars, random shapes)",
               hint="start from the prefix columns, then walk from each node up through its parents to −1")



def tree_walk_cases(seed: int, n: int = 12):
    """(tokens, parents, target's argmax at the root and at each node) of small random trees whose target agrees
    along some branch, sometimes through a second or third sibling."""
    rng = random.Random(seed)
    cases = []
    for k in range(n):
        parents = random_parents(rng.randrange(1, 9), seed * 100 + k)
        tokens = []
        for i, parent in enumerate(parents):
            taken = {tokens[c] for c, p in enumerate(parents[:i]) if p == parent}
            tokens.append(rng.choice([t for t in range(10) if t not in taken]))
        argmax = []
        for node in [-1] + list(range(len(parents))):
            children = [c for c, p in enumerate(parents) if p == node]
            if children and rng.random() < 0.75:
                argmax.append(tokens[rng.choice(children)])
            else:
                argmax.append(rng.randrange(10, 20))  # a token no child holds
        cases.append((tokens, parents, argmax))
    return cases


def check_longest_accepted_path(fn) -> None:
    """fn(tokens, parents, target_argmax) -> (accepted node indices from the root down, the target's token after them):
    from the root, move into the child whose token is the target's argmax at the current node, until none is."""
    cases = tree_walk_cases(7) + [([5], [-1], [5, 6]), ([5], [-1], [4, 6]), ([1, 2, 3], [-1, 0, 0], [1, 3, 8, 9])]
    failures = []
    for tokens, parents, argmax in cases:
        label = f"tokens {tokens}, parents {parents}, target argmax {argmax}"
        got = _attempt(failures, label, fn, list(tokens), list(parents), list(argmax))
        if got is _FAILED:
            continue
        expected = references.tree_walk(tokens, parents, argmax)
        try:
            path, token = list(map(int, got[0])), int(got[1])
        except (TypeError, ValueError, IndexError):
            failures.append(f"{label}: return (list of node indices, token), got {got!r}")
            continue
        if (path, token) != expected:
            hint = ""
            if path == expected[0]:
                hint = " (the token after the path is the target's argmax at the LAST accepted node, index node + 1)"
            elif len(path) < len(expected[0]) and path == expected[0][:len(path)]:
                hint = " (a matching child can be any sibling, not only the first)"
            failures.append(f"{label}: expected {expected}, got {(path, token)}{hint}")
    _all_cases("longest_accepted_path", failures, len(cases),
               f"longest_accepted_path walks {len(cases)} trees as the target's greedy rule does")



SHAPE_CASES = [  # (acceptance of the draft's choice 1, 2, 3, 4; T(k)/T(1) for k = 1 … 17; c; most nodes)
    ((0.35, 0.2, 0.05, 0.02), {k: 1 + 0.03 * (k - 1) for k in range(1, 18)}, 0.1, 8),
    ((0.35, 0.2, 0.05, 0.02), {k: 1 + 0.25 * (k - 1) for k in range(1, 18)}, 0.1, 8),
    ((0.8, 0.1, 0.05, 0.02), {k: 1.0 for k in range(1, 18)}, 0.02, 12),
    ((0.8, 0.1, 0.05, 0.02), {k: 1 + 0.05 * (k - 1) for k in range(1, 18)}, 0.5, 8),
    ((0.5, 0.25, 0.1, 0.05), {1: 1.0, 2: 1.08, 3: 1.17, 4: 1.40, 5: 1.43, 6: 1.52, 7: 1.59, 8: 1.62, 9: 1.64,
                              **{k: 1.64 + 0.06 * (k - 9) for k in range(10, 18)}}, 0.1, 10),
]


def check_best_static_shape(fn) -> None:
    """fn(alpha_of_rank, cost_curve, c, max_nodes) -> the static shape (w₁, w₂, …) of at most max_nodes nodes with the
    largest predicted speedup (E + 1) / (levels · c + T(nodes + 1)/T(1))."""
    failures = []
    for alphas, curve, c, most in SHAPE_CASES:
        label = f"alpha_of_rank {alphas}, T(2)/T(1) = {curve[2]:.2f}, T(9)/T(1) = {curve[9]:.2f}, c = {c}, max_nodes {most}"
        got = _attempt(failures, label, fn, list(alphas), dict(curve), c, most)
        if got is _FAILED:
            continue
        values = references.static_shape_values(alphas, curve, c, most)
        best = max(values, key=values.get)
        try:
            shape = tuple(int(w) for w in got)
        except (TypeError, ValueError):
            failures.append(f"{label}: return a tuple of level widths, got {got!r}")
            continue
        if shape not in values:
            failures.append(f"{label}: {got!r} is not a shape of 1 … {most} nodes with every width at least 1")
        elif values[shape] < values[best] - 1e-9:
            failures.append(f"{label}: expected {best} ({values[best]:.3f}x), got {shape} ({values[shape]:.3f}x)")
    _all_cases("best_static_shape", failures, len(SHAPE_CASES),
               f"best_static_shape finds the best shape on {len(SHAPE_CASES)} machines and drafters",
               hint="level d (from 0) adds alpha_of_rank[0] ** d * sum(alpha_of_rank[:w_d]) tokens; try every shape")
