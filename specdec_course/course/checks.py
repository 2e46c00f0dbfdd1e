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
from .answer_keys import MissingAnswerKey


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


def _judged(failures: list[str], judge, label: str, fn, *args, **kwargs) -> None:
    """Call the learner's function on one case and note what ``judge(result)`` finds wrong (None: nothing)."""
    got = _attempt(failures, label, fn, *args, **kwargs)
    if got is not _FAILED and (problem := judge(got)):
        failures.append(problem)


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


def _hint_reference(name: str, *args, **kwargs):
    """``references.NAME(...)`` where it only names a likely mistake: None where there is no answer for it (a learners'
    copy of the course answers only the calls its answer keys recorded), and the hint is left out."""
    try:
        return getattr(references, name)(*args, **kwargs)
    except MissingAnswerKey:
        return None


def _sampling_mistakes(logits, temperature, top_k) -> dict:
    """What the usual wrong samplers draw from, to name them."""
    def dist(*args):
        return _hint_reference("sampling_distribution", *args)

    mistakes = {"multiplied the logits by the temperature: divide them by it (T < 1 sharpens, T > 1 flattens)":
                    dist(torch.as_tensor(logits) * temperature ** 2, temperature, top_k) if temperature else None,
                "drew from every token: keep only the top_k largest logits": dist(logits, temperature, None),
                "ignored the temperature: divide the logits by it before the softmax": dist(logits, 1.0, top_k)}
    return {why: probs for why, probs in mistakes.items() if probs is not None}


def judge_draws(got, probs: torch.Tensor, n: int, label: str, mistakes: dict | None = None) -> str | None:
    """What is wrong with ``got`` as n independent draws from ``probs`` (None: nothing): a token without probability,
    or counts a chi-square test at significance 0.001 refuses (naming the mistake whose distribution fits them)."""
    try:
        draws = [int(t) for t in got]
    except (TypeError, ValueError):
        return f"{label}: expected a list of token ids, got {type(got).__name__}"
    if len(draws) != n:
        return f"{label}: asked for {n} tokens, got {len(draws)}"
    if any(not 0 <= t < len(probs) for t in draws):
        return f"{label}: a token id outside the vocabulary of {len(probs)}"
    counts = torch.bincount(torch.tensor(draws), minlength=len(probs)).double()

    def refused(dist) -> bool:
        if any(dist[t] == 0 and counts[t] > 0 for t in range(len(dist))):
            return True
        support = dist > 0
        expected = n * dist[support]
        stat = float(((counts[support] - expected) ** 2 / expected).sum())
        df = int(support.sum()) - 1
        return df > 0 and stat > chi_square_critical(df)

    if not refused(probs):
        return None
    hint = next((why for why, dist in (mistakes or {}).items() if not refused(dist)), None)
    outside = [t for t in range(len(probs)) if probs[t] == 0 and counts[t] > 0]
    what = (f"drew token {outside[0]}, which should never come out" if outside
            else f"the counts of {n} draws do not follow the distribution (chi-square test, significance 0.001)")
    return f"{label}: {what}" + (f"; {hint}" if hint else "")


def sampling_cases():
    """(logits, temperature, top_k) for the visible check of sample_next_tokens."""
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(vocab, generator=gen) * 2 for vocab in (8, 10, 12, 9, 7)]
    return [(logits[0], 1.0, None), (logits[1], 0.5, 3), (logits[2], 2.0, 5), (logits[3], 0.0, None),
            (logits[4], 1.5, 1)]


def sampling_problem(fn, logits, temperature, top_k, n: int, seed: int, label: str, failures: list) -> bool:
    """Run the learner's sampler on one case (twice with one seed, once with another); note what is wrong in
    ``failures``. Returns True when the draws changed with the seed."""
    got = _attempt(failures, label, fn, logits.clone(), temperature, top_k, n, torch.Generator().manual_seed(seed))
    if got is _FAILED:
        return False
    probs = references.sampling_distribution(logits, temperature, top_k)
    problem = judge_draws(got, probs, n, label, _sampling_mistakes(logits, temperature, top_k))
    if problem:
        if temperature == 0:
            problem += " (temperature 0 means greedy: every draw is the argmax)"
        failures.append(problem)
        return False
    again = _attempt(failures, label, fn, logits.clone(), temperature, top_k, n, torch.Generator().manual_seed(seed))
    if again is not _FAILED and [int(t) for t in again] != [int(t) for t in got]:
        failures.append(f"{label}: the same seed gave other tokens: draw every random number from the generator "
                        "you are given")
        return False
    other = _attempt(failures, label, fn, logits.clone(), temperature, top_k, n, torch.Generator().manual_seed(seed + 1))
    return other is not _FAILED and [int(t) for t in other] != [int(t) for t in got]


def check_sample_next_tokens(fn) -> None:
    """fn(logits, temperature, top_k, n, generator) -> n token ids drawn from softmax(logits / T) over the top_k
    largest logits (greedy at T = 0)."""
    failures, cases, varied = [], sampling_cases(), False
    for index, (logits, temperature, top_k) in enumerate(cases):
        label = f"case #{index} (vocabulary {len(logits)}, temperature {temperature}, top_k {top_k})"
        varied |= sampling_problem(fn, logits, temperature, top_k, 4000, 10 + index, label, failures)
    if not failures and not varied:
        failures.append("two different seeds gave the same tokens on every case: draw from the generator you are given")
    _all_cases("sample_next_tokens", failures, len(cases), "your draws follow softmax(logits / T) over the top_k "
               "largest logits (4000 draws a case, chi-square test), greedy at T = 0, and follow the generator",
               hint="keep the top_k largest logits (torch.topk), divide by T, softmax, then torch.multinomial(probs, n, "
                    "replacement=True, generator=generator)")


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



def _fed(prompt_length, tau, accepted, use_cache, *, reads_last_draft=False, fresh_cache=False, no_correction=False):
    """draft_tokens_fed with one likely mistake switched on, to name it."""
    fed, context, cached = [], prompt_length, 0
    for n in accepted:
        if fresh_cache:
            cached = 0
        for t in range(tau):
            fed.append(context + t - cached if use_cache else context + t)
            cached = context + t
        cached = context + n if reads_last_draft else min(cached, context + n)
        context += n + (0 if no_correction else 1)
    return fed


FED_MISTAKES = {"reads_last_draft": "the draft never reads a step's LAST draft (it only proposes it): after a step that "
                                    "kept every draft, its cache lacks that draft, so the next first pass reads two "
                                    "tokens (that draft and the target's token)",
                "fresh_cache": "the draft's cache is kept from step to step, rolled back to the kept tokens: a step's "
                               "first pass reads only what the cache has not seen",
                "no_correction": "every step also adds the target's own token (the correction, or the bonus token "
                                 "after τ accepted drafts): the context grows by n + 1"}


def fed_problem(got, prompt_length: int, tau: int, accepted, use_cache: bool, label: str, *,
                hidden: bool = False) -> str | None:
    """What is wrong with ``got`` as draft_tokens_fed(prompt_length, tau, accepted, use_cache) (None: nothing)."""
    expected = references.draft_tokens_fed(prompt_length, tau, accepted, use_cache)
    try:
        counts = [int(x) for x in got]
    except (TypeError, ValueError):
        return f"{label}: expected a list of token counts, one per draft forward pass, got {type(got).__name__}"
    if counts == expected:
        return None
    if len(counts) != len(expected):
        return (f"{label}: {len(counts)} passes listed; every step makes τ draft passes, one per draft token"
                + ("" if hidden else f" ({len(expected)} here)"))
    hint = " or: ".join(why for flag, why in FED_MISTAKES.items()
                        if counts == _fed(prompt_length, tau, accepted, use_cache, **{flag: True})) or None
    where = next(i for i, (a, b) in enumerate(zip(counts, expected)) if a != b)
    told = f"pass {where} (step {where // tau}, draft {where % tau + 1}) reads the wrong number of tokens"
    if not hidden:
        told += f": expected {expected}, got {counts}"
    return f"{label}: {told}" + (f" ({hint})" if hint else "")


def fed_cases():
    """(prompt_length, tau, accepted) runs for the visible check: a rejection, a fully accepted step, τ = 1, none."""
    return [(5, 3, [1, 3, 0]), (4, 1, [0, 1, 1]), (6, 4, [4, 4, 2]), (7, 2, [])]


def check_draft_tokens_fed(fn) -> None:
    """fn(prompt_length, tau, accepted, use_cache) -> the tokens each draft forward pass reads over the run."""
    failures, total = [], 0
    for prompt_length, tau, accepted in fed_cases():
        for use_cache in (False, True):
            total += 1
            label = (f"prompt of {prompt_length} tokens, tau={tau}, accepted {accepted}, "
                     f"{'with' if use_cache else 'without'} a cache")
            _judged(failures, lambda got: fed_problem(got, prompt_length, tau, accepted, use_cache, label),
                    label, fn, prompt_length, tau, list(accepted), use_cache)
    _all_cases("draft_tokens_fed", failures, total, "you counted what the draft reads: the whole context every pass "
               "without a cache, one token a pass with one (two after a step that kept every draft)",
               hint="walk the steps: τ passes each; then the context grows by n + 1 and the cache is cut back to the "
                    "kept tokens it has read")


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


def measure_cases(seed: int = 0) -> list[dict]:
    """Tiny targets, each with three drafts (noisy copies of it: the noisier, the less they agree), held-out answers,
    and simulated costs (ms per pass, ms per extra token) for every model: {"target", "target_cost", "drafts": {name:
    (draft, cost)}, "data", "ratio"}. The costs make the more accurate drafts the slower ones."""
    from ..distill import target_labels
    from ..models import noisy_copy

    cases = []
    for case in range(2):
        vocab = 48 + 16 * case
        target = tiny_llama(900 + 10 * seed + case, vocab_size=vocab, peaked=2.0)
        gen = torch.Generator().manual_seed(910 + 10 * seed + case)
        tokens, prompt_lengths = [], []
        for row in range(3):
            prompt = torch.randint(2, vocab, (1, 3 + (2 * row + seed) % 5), generator=gen)
            answer = autoregressive_generate(target, prompt, 6 + (3 * row + case) % 7).tokens
            tokens.append(torch.cat([prompt[0], torch.tensor(answer)]).to(torch.int32))
            prompt_lengths.append(prompt.shape[1])
        data = {"tokens": tokens, "labels": target_labels(target, tokens), "prompt_lengths": prompt_lengths}
        scales = ((1.2, 0.5, 0.15), (0.9, 0.35, 0.05))[case]
        costs = (((2.0, 0.5), (8.0, 1.0), (21.0, 2.5)), ((1.0, 0.2), (6.0, 0.5), (30.0, 3.0)))[(case + seed) % 2]
        drafts = {name: (noisy_copy(target, scale, seed=920 + 10 * seed + case), cost)
                  for name, scale, cost in zip(("small", "medium", "large"), scales, costs)}
        ratio = ({t: 1.0 + 0.02 * t for t in range(1, 9)}, {t: 1.0 + 0.15 * t for t in range(1, 9)})[(case + seed) % 2]
        cases.append({"target": target, "target_cost": ((40.0, 4.0), (25.0, 3.0))[case], "drafts": drafts,
                      "data": data, "ratio": ratio})
    return cases


def _c_mistake(value: float, target_cost, draft_cost) -> str:
    """Name the likely mistake behind a wrong c on the simulated clock (empty when none fits)."""
    (t, t_extra), (d, d_extra) = target_cost, draft_cost
    if abs(value - t / d) < 1e-6 * max(1.0, t / d):
        return " (that is the target's step over the draft's: c is the draft's time over the target's)"
    if abs(value - d) < 1e-6 or abs(value - d / 1000) < 1e-9:
        return " (that is the draft's time: return c, the ratio of the draft's one-token step to the target's)"
    if value * t_extra != d_extra:
        k = 1 + (d - value * t) / (value * t_extra - d_extra)
        if k > 1.5 and abs(k - round(k)) < 1e-3:
            return (f" (that is the ratio of passes over {round(k)} tokens: time ONE new token after a cached prefix, "
                    "e.g. sc.forward_time(model, 100, 1))")
    return ""


def _measure(fn, case: dict, name: str, failures: list, label: str, hidden: bool = False):
    """Run fn(target, draft, data) for one draft of ``case`` on the simulated clock; (α, c) it returned, or None after
    noting what is wrong in ``failures``."""
    import contextlib

    from ..perf import clock

    draft, cost = case["drafts"][name]
    with contextlib.ExitStack() as stack:
        stack.enter_context(clock.simulated())
        stack.enter_context(clock.added_cost(case["target"], *case["target_cost"]))
        stack.enter_context(clock.added_cost(draft, *cost))
        got = _attempt(failures, label, fn, case["target"], draft, case["data"])
    if got is _FAILED:
        return None
    try:
        alpha, c = (float(x) for x in got)
    except (TypeError, ValueError):
        failures.append(f"{label}: return (α, c), two numbers, got {got!r}")
        return None
    expected_alpha = references.held_out_alpha(draft, case["data"])
    expected_c = cost[0] / case["target_cost"][0]
    problems = []
    if abs(alpha - expected_alpha) > 1e-9:
        hint = next((f" ({why})" for why, value in _held_out_mistakes(draft, case["data"]).items()
                     if abs(alpha - value) < 1e-9 and abs(value - expected_alpha) > 1e-9), "")
        problems.append(("α is not the draft's pooled agreement on the held-out answers" if hidden else
                         f"α: expected {expected_alpha:.4f}, got {alpha:.4f}") + hint)
    if abs(c - expected_c) > 1e-6 * max(1.0, expected_c):
        hint = _c_mistake(c, case["target_cost"], cost)
        problems.append(("c is not the draft's one-token step over the target's" if hidden else
                         f"c: expected {expected_c:.4f}, got {c:.4f}") + hint)
    if problems:
        failures.append(f"{label}: " + "; ".join(problems))
        return None
    return alpha, c


def check_measure_draft(fn, choose_fn) -> None:
    """fn(target, draft, held_out) -> (α, c): the draft's pooled held-out agreement and its one-token step time over the
    target's, measured on a simulated clock where every pass costs a set time; then choose_fn on those measurements
    must pick the draft and τ the grader's own measurements give."""
    failures, total = [], 0
    for index, case in enumerate(measure_cases()):
        measured = {}
        for name in case["drafts"]:
            total += 1
            label = f"case #{index}, the {name} draft"
            row = _measure(fn, case, name, failures, label)
            if row is not None:
                measured[name] = row
        if len(measured) < len(case["drafts"]):
            continue
        total += 1
        truth = {name: (references.held_out_alpha(d, case["data"]), cost[0] / case["target_cost"][0])
                 for name, (d, cost) in case["drafts"].items()}
        expected = references.choose_draft(truth, case["ratio"])
        got = _attempt(failures, f"case #{index}, choose_draft", choose_fn, dict(measured), dict(case["ratio"]))
        if got is _FAILED:
            continue
        try:
            ok = got[0] == expected[0] and int(got[1]) == expected[1]
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            failures.append(f"case #{index}: from your measurements {measured}, choose_draft picks {got!r}; expected "
                            f"({expected[0]!r}, {expected[1]}, {expected[2]:.3f}) (fix Task 5's choose_draft first)")
    _all_cases("measure_draft", failures, total,
               "measure_draft measures α and c as the grader does, and the choice from your measurements is the right one",
               hint="α: your held_out_alpha; c: time ONE cached one-token pass of each model with sc.forward_time(model, "
                    "100, 1) (it reads the course's clock, which the check simulates), draft over target")


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



def flip_case(seed: int, k: int, vocab: int, bound_64ths: int, *, near: int = 0, flip_at=None, tie_at=None):
    """(one_pass, one_by_one, bound) on a grid of multiples of 1/128, so that every difference and 2·bound is exact
    in float32: k rows of random logits; ``near`` rows (at random) get a top-2 margin under 2·bound, the row
    ``tie_at`` a margin of exactly 2·bound, the others a larger one; one_by_one moves every logit by at most the bound,
    and flips the argmax of the row ``flip_at`` (which gets a margin under 2·bound). No row of either ties at the top."""
    rng = random.Random(seed)
    step, bound = 1 / 128, bound_64ths / 64
    while True:
        close = set(rng.sample(range(k), min(near, k))) | ({flip_at} if flip_at is not None else set())
        one_pass, one_by_one = [], []
        for i in range(k):
            row = [rng.randint(-640, 640) * step for _ in range(vocab)]
            best, runner = rng.sample(range(vocab), 2)
            row[best] = rng.randint(700, 900) * step
            if i == tie_at:
                row[runner] = row[best] - 2 * bound
            elif i in close:
                row[runner] = row[best] - (2 * rng.randint(0, 2 * bound_64ths - 1) + 1) * step  # under 2·bound
            else:
                row[runner] = row[best] - 2 * bound - rng.randint(1, 64) * step
            for j in range(vocab):
                if j not in (best, runner):
                    row[j] = min(row[j], row[runner] - step)
            moved = [x + rng.randint(-2 * bound_64ths, 2 * bound_64ths) * step for x in row]
            if i == flip_at:
                moved[best], moved[runner] = row[best] - bound, row[runner] + bound
            one_pass.append(row)
            one_by_one.append(moved)
        if all(sorted(r)[-1] != sorted(r)[-2] for r in one_pass + one_by_one):
            return torch.tensor(one_pass), torch.tensor(one_by_one), bound


def flip_cases():
    """Visible cases of argmax_flips: (one_pass, one_by_one, bound)."""
    return [flip_case(0, 5, 8, 4, near=1, flip_at=3), flip_case(1, 4, 6, 2), flip_case(2, 6, 10, 8, near=2),
            flip_case(3, 3, 7, 4, flip_at=0), flip_case(4, 5, 9, 2, tie_at=2)]


def _flip_mistakes(one_pass, one_by_one, bound) -> dict:
    """The usual wrong answers for the first element (a possible flip), to name them."""
    top2 = one_pass.double().topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).tolist()
    first = lambda rows: rows[0] if rows else None  # noqa: E731
    return {"a logit may move by the bound in EITHER way: the top one down and the second one up, so the argmax can "
            "change where top-1 − top-2 ≤ 2·bound, not where it is ≤ bound":
                first([i for i, m in enumerate(margin) if m <= bound]),
            "a margin of exactly 2·bound can tie, and a tie can go either way: ≤, not <":
                first([i for i, m in enumerate(margin) if m < 2 * bound]),
            "rows are numbered from 0": (lambda i: None if i is None else i + 1)(first(
                [i for i, m in enumerate(margin) if m <= 2 * bound])),
            "the FIRST row, not the last":
                (lambda rows: rows[-1] if rows else None)([i for i, m in enumerate(margin) if m <= 2 * bound])}


def flip_problem(got, one_pass, one_by_one, bound, label: str, *, hidden: bool = False) -> str | None:
    """What is wrong with ``got`` as argmax_flips(one_pass, one_by_one, bound) (None: nothing)."""
    expected = references.argmax_flips(one_pass, one_by_one, bound)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"{label}: expected a pair (first row that could flip, first row that does flip), got {got!r}"
    values = []
    for value in got:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, torch.Tensor))):
            return f"{label}: each element is a row index (an int) or None, got {got!r}"
        values.append(None if value is None else int(value))
    could, does = values
    problems = []
    if could != expected[0]:
        hint = " or: ".join(why for why, value in _flip_mistakes(one_pass, one_by_one, bound).items()
                            if value == could and value != expected[0]) or None
        problems.append("the first element (the first row whose argmax COULD differ) is wrong"
                        + ("" if hidden else f": expected {expected[0]}, got {could}") + (f"; {hint}" if hint else ""))
    if does != expected[1]:
        problems.append("the second element (the first row whose argmax DOES differ between the two tensors) is wrong"
                        + ("" if hidden else f": expected {expected[1]}, got {does}")
                        + ("; None when the argmaxes agree on every row" if does is not None and expected[1] is None
                           and hidden else ""))
    return f"{label}: " + "; ".join(problems) if problems else None


def check_argmax_flips(fn) -> None:
    """fn(one_pass, one_by_one, bound) -> (first row whose argmax could differ, first row whose argmax differs)."""
    failures, cases = [], flip_cases()
    for index, (one_pass, one_by_one, bound) in enumerate(cases):
        label = f"case #{index} ({one_pass.shape[0]} rows, bound {bound})"
        _judged(failures, lambda got: flip_problem(got, one_pass, one_by_one, bound, label),
                label, fn, one_pass.clone(), one_by_one.clone(), bound)
    _all_cases("argmax_flips", failures, len(cases), "you find where an argmax can flip (a top-2 margin within "
               "2 × the bound) and where it does", hint="margin = top-1 − top-2 of each row of one_pass (torch.topk(2)); "
               "could flip where margin ≤ 2·bound")


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
        label = f"case #{index} ({'p == q' if torch.equal(p, q) else 'p ≠ q'})"
        _judged(failures, lambda got: judge_samples(got, residual(p, q), label), f"case #{index}", fn, p.clone(),
                q.clone(), 3000, torch.Generator().manual_seed(index))
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


WORKED_CASE = ([0.9, 0.2, 0.1, 0.8], [0.5, 0.4, 0.5, 0.3], [0.7, 0.45, 0.3, 0.9])  # exercise 03, Task 2, on paper


def step_problem(got, p, q, r, label: str, *, hidden: bool = False) -> str | None:
    """What is wrong with ``got`` as by_hand(p, q, r) = (verdicts, n, appended) (None: nothing)."""
    verdicts, n, appended = references.step_outcome(p, q, r)
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        return f"{label}: return three things, (verdicts, n, tokens appended), got {got!r}"
    problems = []
    got_verdicts = ([str(v).strip().upper()[:1] for v in got[0]] if isinstance(got[0], (list, tuple)) else None)
    if got_verdicts != verdicts:
        if got_verdicts is None or len(got_verdicts) != len(verdicts):
            problems.append("the verdicts should be a list with one \"A\" or \"R\" per draft token, even after a "
                            "rejection")
        elif hidden:
            problems.append("some verdicts are not the rule's (p ≥ q accepts; else accept if r ≤ p/q; a token after a "
                            "rejection still gets its verdict)")
        else:
            wrong = [t + 1 for t, (a, b) in enumerate(zip(verdicts, got_verdicts)) if a != b]
            problems.append(f"verdicts {got[0]!r}: wrong for token(s) {wrong} (p ≥ q accepts; else compare r with p/q)")
    if got[1] != n:
        problems.append(f"n = {got[1]!r}: count only the consecutive accepted drafts from the start"
                        + ("" if hidden else f" ({n} here)"))
    if got[2] != appended:
        why = ("the kept drafts plus one token from the target: the correction after a rejection, the bonus token "
               "when every draft is accepted")
        problems.append(f"tokens appended = {got[2]!r}: " + why)
    return f"{label}: " + "; ".join(problems) if problems else None


def check_by_hand(fn) -> None:
    """fn(p_tokens, q_tokens, r) -> (verdicts, n, appended): the worked case of exercise 03 first, then three more."""
    cases = [WORKED_CASE, ([0.6, 0.3, 0.5], [0.2, 0.3, 0.1], [0.9, 0.9, 0.9]), ([], [], []),
             ([0.25, 0.1], [0.5, 0.8], [0.5, 0.2])]
    failures = []
    for index, (p, q, r) in enumerate(cases):
        label = "the worked case" if index == 0 else f"p={p}, q={q}, r={r}"
        _judged(failures, lambda got: step_problem(got, p, q, r, label), label, fn, list(p), list(q), list(r))
    _all_cases("by_hand", failures, len(cases), "by hand: verdicts A A R A, n = 2, and 3 tokens appended (2 drafts + "
               "the correction); and the same rule on three more steps (every draft accepted, no drafts, a tie r = p/q)")


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


def judge_acceptance_rate(got, p: torch.Tensor, q: torch.Tensor, label: str, *, hidden: bool = False) -> str | None:
    """What is wrong with ``got`` as the acceptance rate of drafts drawn from q and tested against p (None: nothing);
    ``hidden``: without the right value."""
    value = _as_float(got)
    if value is None:
        return f"{label}: expected a number, got {type(got).__name__}"
    expected = float(torch.minimum(p, q).sum())
    if abs(value - expected) <= 1e-5:
        return None
    hint = _mistake_hint(value, p, q, 1e-5)
    if hidden:
        return (f"{label}: {value:.4f} is not the probability that a draft drawn from q passes the test"
                + (f" ({hint})" if hint else ""))
    return f"{label}: expected {expected:.4f}, got {value:.4f}" + (f" ({hint})" if hint else "")


def check_acceptance_rate(fn) -> None:
    """fn(p, q) -> the probability that a draft drawn from q passes the test against p: Σ_y min(p(y), q(y))."""
    failures, cases = [], acceptance_cases()
    for index, (p, q) in enumerate(cases):
        label = f"case #{index} (vocabulary {len(p)}{', p == q' if torch.equal(p, q) else ''})"
        _judged(failures, lambda got: judge_acceptance_rate(got, p, q, label), label, fn, p.clone(), q.clone())
    _all_cases("acceptance_rate", failures, len(cases), "acceptance_rate gives Σ_y q(y)·min(1, p(y)/q(y)) = Σ_y min(p(y), "
               "q(y)) = 1 − TV(p, q) on every case (including p == q and disjoint supports)",
               hint="P(accept) = Σ_y P(draft = y)·P(accept | y) = Σ_y q(y)·min(1, p(y)/q(y))")


def judge_simulated_rate(fn, p: torch.Tensor, q: torch.Tensor, n: int, seed: int, label: str,
                         failures: list, *, hidden: bool = False) -> bool:
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
        told = "" if hidden else f" = {expected:.4f} (± {tolerance:.4f} for {n} draws)"
        failures.append(f"{label}: simulated {value:.4f}, too far from the probability Σ min(p, q){told} with which "
                        f"drafts from q pass" + (f": {hint}" if hint else ""))
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


def plan_problem(got, config: dict, batch: int, budget: int, label: str, *, hidden: bool = False) -> str | None:
    """What is wrong with ``got`` as cache_plan(config, batch, budget) (None: nothing), naming the usual mistakes."""
    per_position, longest = references.cache_plan(config, batch, budget)
    try:
        got_per, got_longest = got
        got_per, got_longest = (int(x) if int(x) == x and not isinstance(x, bool) else None for x in (got_per, got_longest))
    except (TypeError, ValueError):
        return f"{label}: expected a pair of whole numbers (bytes per position, longest context), got {got!r}"
    problems = []
    if got_per != per_position:
        heads, layers = config["num_attention_heads"], config["num_hidden_layers"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        size = references.DTYPE_BYTES[config["torch_dtype"]]
        mistakes = {"count the KEY-VALUE heads (num_key_value_heads), not the query heads": 2 * layers * heads * head_dim * size * batch,
                    "keys AND values: two tensors per layer": layers * kv_heads * head_dim * size * batch,
                    "every sequence of the batch has its own cache: times the batch": 2 * layers * kv_heads * head_dim * size,
                    "the head size is hidden_size / num_attention_heads where head_dim is missing":
                        2 * layers * kv_heads * (config["hidden_size"] // kv_heads) * size * batch,
                    f"{config['torch_dtype']} takes {size} byte(s) per element":
                        2 * layers * kv_heads * head_dim * batch * (4 if size != 4 else 2)}
        hint = "; or ".join(why for why, value in mistakes.items() if value == got_per and value != per_position) or None
        problems.append("wrong bytes per position" + ("" if hidden else f": expected {per_position}, got {got_per}")
                        + (f" ({hint})" if hint else ""))
    elif got_longest != longest:
        hint = (" (the longest context must FIT: round down)" if got_longest == -(-budget // per_position) else "")
        problems.append("wrong longest context" + ("" if hidden else f": expected {longest}, got {got_longest}") + hint)
    return f"{label}: " + "; ".join(problems) if problems else None


PLAN_CONFIGS = {  # config.json-style: what a model's files say about its attention
    "a GQA model in bfloat16": {"num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 4,
                                "hidden_size": 2048, "head_dim": 128, "torch_dtype": "bfloat16"},
    "a model without head_dim": {"num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 6,
                                 "hidden_size": 768, "torch_dtype": "float16"},
    "a multi-head model (no num_key_value_heads)": {"num_hidden_layers": 6, "num_attention_heads": 8,
                                                    "hidden_size": 512, "torch_dtype": "float32"},
}


def check_cache_plan(fn) -> None:
    """fn(config, batch, budget_bytes) -> (KV-cache bytes per position for the batch, the longest context that fits)."""
    cases = [("a GQA model in bfloat16", 1, 2 * 1024 ** 3), ("a GQA model in bfloat16", 8, 2 * 1024 ** 3),
             ("a model without head_dim", 4, 10 ** 9), ("a multi-head model (no num_key_value_heads)", 2, 5_000_000),
             ("a multi-head model (no num_key_value_heads)", 3, 1000)]
    failures = []
    for name, batch, budget in cases:
        config = dict(PLAN_CONFIGS[name])
        label = f"{name}, batch {batch}, budget {budget:,} bytes"
        _judged(failures, lambda got: plan_problem(got, config, batch, budget, label),
                label, fn, dict(config), batch, budget)
    _all_cases("cache_plan", failures, len(cases), "cache_plan reads a config.json, sizes the cache of a batch and "
               "finds the longest context that fits", hint="bytes per position = 2 × layers × KV heads × head size × "
               "bytes per element × batch; longest context = budget // that")


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


MEASURE_PREFIX = 64  # the prefix a measured pass follows (Task 4 of exercise 06)


def measured_mistake(value: float, k: int, a: float, b: float) -> str:
    """Name the likely mistake behind a wrong T(k) measured on a clock where a pass over j tokens costs exactly
    a + b (j − 1) ms (empty when none fits)."""
    def cost(j):
        return a + b * (j - 1)

    def near(x):
        return abs(value - x) <= 1e-6 * max(1.0, abs(x))

    if near(0.0):
        return ("nothing was timed on the clock the check runs: read specdec_course.perf.clock.now() (not "
                "time.perf_counter()) just before and after a pass of the model you are given")
    if near(cost(k) / 1000):
        return "that is seconds: return milliseconds"
    if near(cost(k + 1)):
        return "that is a pass over k + 1 tokens: feed only the k new tokens, the prefix is in the cache"
    if k > 1 and near(k * cost(1)):
        return "that is k one-token passes: feed the k new tokens in ONE pass"
    if near(cost(k) + cost(MEASURE_PREFIX)) or near(cost(MEASURE_PREFIX + k)):
        return "the pass over the prefix is in it: fill the cache with the prefix first, then start the clock"
    if any(near(r * cost(k)) for r in range(2, 12)):
        return "that is the total of several passes: time each pass on its own and take the median"
    return ""


def judge_measured(got, ks, a: float, b: float, label: str, *, hidden: bool = False) -> list[str]:
    """What is wrong with ``got``, the {k: T(k) ms} a function reported on a clock where a pass over k tokens costs
    exactly a + b (k − 1) ms (empty: nothing). ``hidden``: never show the expected value."""
    ks = [int(k) for k in ks]
    if not isinstance(got, dict) or sorted(got) != sorted(ks):
        shown = sorted(got) if isinstance(got, dict) else type(got).__name__
        return [f"{label}: return a dict {{k: T(k) in ms}} with exactly the keys {ks}, got {shown}"]
    problems = []
    for k in ks:
        try:
            value = float(got[k])
        except (TypeError, ValueError):
            problems.append(f"{label}, k={k}: {got[k]!r} is not a number of milliseconds")
            continue
        expected = a + b * (k - 1)
        if not abs(value - expected) <= 1e-6:
            hint = measured_mistake(value, k, a, b)
            problems.append(f"{label}, k={k}: " + ("T(k) is not one cached pass over k new tokens" if hidden else
                                                    f"expected {expected:g} ms, got {value:g}")
                            + (f" ({hint})" if hint else ""))
    return problems


def measure_on_clock(fn, model, ks, a: float, b: float, failures: list, label: str):
    """fn(model, ks) on a simulated clock where each pass of ``model`` over k tokens costs a + b (k − 1) ms."""
    from ..perf import clock

    with clock.simulated(), clock.added_cost(model, ms_per_pass=a, ms_per_extra_token=b):
        return _attempt(failures, label, fn, model, list(ks))


def check_measured_costs(fn, model) -> dict:
    """fn(model, ks) -> {k: ms of ONE cached pass over k new tokens after a 64-token prefix}, judged exactly on a
    simulated clock on which a pass of ``model`` over k tokens costs a + b (k − 1) ms; then run once on the real clock
    for this machine's numbers (a plausibility note, not part of the verdict)."""
    failures, total = [], 0
    for (a, b), ks in (((37.0, 2.5), [1, 2, 4, 8]), ((12.0, 0.75), [3, 5])):
        label = f"simulated pass of {a:g} + {b:g}·(k − 1) ms"
        total += len(ks)
        got = measure_on_clock(fn, model, ks, a, b, failures, label)
        if got is not _FAILED:
            failures += judge_measured(got, ks, a, b, label)
    if failures:
        _all_cases("measure_target_ms", failures, total, "", hint=(
            "on a simulated clock only the model's passes cost time, exactly a + b·(k − 1) ms each: fill a cache with "
            "the prefix, then for each k read clock.now(), run ONE pass over k new tokens, read clock.now() again, "
            "roll the cache back to the prefix; repeat and take the median, in ms"))
    from ..generation import forward_time

    real = _call(fn, model, [1, 8])
    note = ""
    try:
        fresh = 1000 * forward_time(model, MEASURE_PREFIX, 1, repeats=3)
        note = f"; on this machine your T(1) = {float(real[1]):.1f} ms, T(8) = {float(real[8]):.1f} ms " \
               f"(a fresh measurement: T(1) = {fresh:.1f} ms"
        note += ")" if 0.33 * fresh <= float(real[1]) <= 3 * fresh else "; far apart: a busy machine?)"
    except (TypeError, ValueError, KeyError, IndexError):
        pass
    passed("measure_target_ms times exactly one cached pass over k new tokens" + note)
    return real


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


BUDGET_CURVES = {"flat": {k: 30.0 for k in range(1, 14)},
                 "steep": {k: 30.0 * (1 + 0.15 * (k - 1)) for k in range(1, 14)},
                 "jump at 4": {k: 30.0 if k < 4 else 45.0 for k in range(1, 14)}}
BUDGET_CASES = [  # (curve, d ms, α, budget ms per generated token): the visible check's cases
    ("flat", 2.0, 0.8, 40.0), ("flat", 2.0, 0.8, 9.0), ("flat", 2.0, 0.8, 5.0), ("flat", 6.0, 0.6, 15.0),
    ("steep", 1.0, 0.9, 20.0), ("steep", 1.0, 0.3, 30.0), ("steep", 1.0, 0.3, 25.0), ("steep", 10.0, 0.3, 30.0),
    ("jump at 4", 3.0, 0.7, 18.0), ("jump at 4", 3.0, 0.95, 12.0), ("jump at 4", 10.0, 0.5, 100.0),
]


def _budget_choice(options: dict):
    """The fastest option (the smallest τ of equally fast ones), or None when nothing fits."""
    return max(sorted(options), key=lambda t: options[t]) if options else None


def budget_mistake(got, target_ms, draft_ms, alpha, budget_ms, max_tau) -> str:
    """Name the likely mistake behind a wrong ``tau_under_budget`` answer (empty when none fits)."""
    from ..perf.cost_model import expected_tokens_per_step

    options = references.budget_options(target_ms, draft_ms, alpha, budget_ms, max_tau)
    if got is None:
        return "something fits the budget: return None only when not even the target alone fits" if options else ""
    if got == 0 and not options:
        return "the target alone needs T(1) ms of target time per token, more than the budget: return None"
    if not isinstance(got, int) or isinstance(got, bool) or not 0 <= got <= max_tau:
        return f"return a τ in 0 … {max_tau}, or None"
    if got not in options:
        return "this τ does not fit the budget: its target time per generated token, T(τ+1)/E(α, τ), is above it"
    tokens = {t: expected_tokens_per_step(alpha, t) for t in range(1, max_tau + 1)}
    speeds = {0: 1.0, **{t: tokens[t] * target_ms[1] / (t * draft_ms + target_ms[t + 1]) for t in tokens}}

    def choice(fits):  # the fastest choice under a mistaken rule for τ ≥ 1 (the target alone where it fits)
        return _budget_choice({t: v for t, v in speeds.items() if (fits(t) if t else target_ms[1] <= budget_ms)})

    mistakes = ((lambda t: target_ms[t + 1] <= budget_ms,
                 "the budget is per generated token: T(τ+1)/E(α, τ), not T(τ+1) per step"),
                (lambda t: (t * draft_ms + target_ms[t + 1]) / tokens[t] <= budget_ms,
                 "drafting runs on the drafter, not the target: only T(τ+1) counts against the target's budget"))
    for fits, why in mistakes:
        if got == choice(fits):
            return why
    if 0 in options and got == _budget_choice({t: v for t, v in options.items() if t}):
        return "the target alone (τ = 0, speedup 1) fits too and is faster: compare with it"
    return "it fits, but another choice that fits is faster"


def judge_budget(got, target_ms, draft_ms, alpha, budget_ms, max_tau, label, *, hidden=False) -> str | None:
    """None if ``got`` is a right answer to ``tau_under_budget`` (or as fast as one), else what is wrong."""
    options = references.budget_options(target_ms, draft_ms, alpha, budget_ms, max_tau)
    expected = _budget_choice(options)
    if got is not None and not isinstance(got, bool):
        try:
            if int(got) == got:
                got = int(got)
        except (TypeError, ValueError):
            pass
    if got == expected and (got is None) == (expected is None):
        return None
    if got is not None and expected is not None and got in options and options[got] >= options[expected] - 1e-9:
        return None
    why = budget_mistake(got, target_ms, draft_ms, alpha, budget_ms, max_tau)
    if hidden:
        return f"{label}: τ = {got!r} is wrong" + (f" ({why})" if why else "")
    shown = "None (nothing fits)" if expected is None else (f"τ = {expected} (the target alone)" if expected == 0 else
                                                            f"τ = {expected} ({options[expected]:.2f}x)")
    return f"{label}: expected {shown}, got {got!r}" + (f" ({why})" if why else "")


def check_tau_under_budget(fn) -> None:
    """fn(target_ms, draft_ms, alpha, budget_ms, max_tau) -> the fastest τ in 0 … max_tau whose target time per
    generated token fits ``budget_ms`` (τ = 0: the target alone, T(1) per token), None if none does."""
    failures = []
    for curve, draft_ms, alpha, budget_ms in BUDGET_CASES:
        target_ms = BUDGET_CURVES[curve]
        label = f"T(k) {curve}, d = {draft_ms:g} ms, α = {alpha}, budget {budget_ms:g} ms per token"
        got = _attempt(failures, label, fn, dict(target_ms), draft_ms, alpha, budget_ms, 12)
        if got is not _FAILED:
            problem = judge_budget(got, target_ms, draft_ms, alpha, budget_ms, 12, label)
            if problem:
                failures.append(problem)
    _all_cases("tau_under_budget", failures, len(BUDGET_CASES),
               "tau_under_budget finds the fastest choice that fits the target's budget, the target alone included",
               hint="a token at τ ≥ 1 costs the target T(τ+1)/E(α, τ) ms, at τ = 0 T(1) ms; keep the choices that fit, "
                    "then take the largest speedup (1 for the target alone)")


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


TRACE_RUNS = [  # the runs fault_traces makes: a tiny target and its noisy copy, a prompt, τ, the pair's simulated costs
    {"model": 0, "prompt": (0, 12), "tau": 3, "target_ms": (40.0, 4.0), "draft_ms": 3.0, "cut": 5},   # the notebook's
    {"model": 6, "noise": 0.2, "prompt": (3, 9), "tau": 4, "target_ms": (30.0, 3.5), "draft_ms": 6.0, "cut": 3},  # hidden
    {"model": 8, "prompt": (4, 15), "tau": 2, "target_ms": (55.0, 9.0), "draft_ms": 12.0, "cut": 7},
]
DIAGNOSES = {"healthy": "none", "no_chat_template": "prompt_mismatch", "slow_draft": "slow_draft",
             "token_by_token_verification": "verification_not_one_pass", "slow_kernels": "slow_kernels",
             "stale_cache": "stale_cache"}
_TRACE_HOME: list = []  # the folder fault_traces last wrote to (the grader's is one its sandbox shows the kernel)


def fault_traces(folder, seed=None, *, run: int = 0, only=None, prefix: str = "run") -> dict:
    """{fault name or "healthy": trace path} for each fault of ``faults.FAULTS``, on tiny models timed on a simulated
    clock (the same traces on every machine, a few seconds). The file names, ``{prefix}_1.jsonl`` …, are shuffled:
    with ``seed`` None afresh on every call, so a name tells nothing about its fault. ``run`` picks the models, prompt,
    τ and costs (``TRACE_RUNS``: 0 is the notebook's); ``only``: just these faults."""
    from pathlib import Path

    from ..models import noisy_copy
    from ..perf import clock, faults
    from ..speculative import speculative_generate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if run == 0:
        _TRACE_HOME[:] = [folder]
    spec = TRACE_RUNS[run]
    target = tiny_llama(spec["model"], vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, spec.get("noise", 0.1), seed=spec["model"] + 1)  # usually, not always, right
    seed_, length = spec["prompt"]
    prompt = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(seed_))
    runs = [name for name in ("healthy",) + faults.FAULTS if only is None or name in only]
    shuffle = random.Random(seed) if seed is not None else random.SystemRandom()
    numbers = shuffle.sample(range(1, len(runs) + 1), len(runs))  # names that tell nothing
    paths, tau = {}, spec["tau"]
    with clock.simulated_costs(target, draft, target_ms=spec["target_ms"][0],
                               target_ms_per_extra_token=spec["target_ms"][1], draft_ms=spec["draft_ms"]):
        for fault, number in zip(runs, numbers):
            path = paths[fault] = folder / f"{prefix}_{number}.jsonl"
            if fault == "healthy":
                speculative_generate(target, draft, prompt, 32, tau=tau, trace=path)
            elif fault == "no_chat_template":
                speculative_generate(target, draft, prompt, 32, tau=tau, trace=path, draft_input_ids=prompt[:, spec["cut"]:])
            else:
                with faults.injected(fault, target, draft):
                    speculative_generate(target, draft, prompt, 32, tau=tau, trace=path)
    return paths


def scratch_folder(prefix: str = "hidden-"):
    """A new folder for the hidden checks' traces: beside the traces fault_traces last wrote (the grader's are where
    its sandbox lets the kernel read them), else a temporary one."""
    import tempfile
    from pathlib import Path

    home = _TRACE_HOME[0].parent if _TRACE_HOME and _TRACE_HOME[0].parent.is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=home))


DIAGNOSIS_EVIDENCE = {  # what supports each answer, to point a wrong answer at the evidence (never at the right one)
    "stale_cache": "a stale cache shows as a step whose target_cache differs from its kept",
    "verification_not_one_pass": "that needs the median of target_calls over the steps after the first to be above 1",
    "prompt_mismatch": "that needs the header's draft_prompt_length to differ from its prompt_length",
    "slow_kernels": "that needs T(k)/T(1) > 1.6 for the largest k in calibration['target_ms']",
    "slow_draft": "that needs calibration['draft_ms'] / T(1) > 0.25",
    "none": "that needs every rule to pass",
}


def diagnose_hint(got) -> str:
    """What to look at after a wrong diagnosis, from the answer given (it says nothing of the right one)."""
    if not isinstance(got, str) or got not in DIAGNOSIS_EVIDENCE:
        return f"return one of {', '.join(repr(k) for k in DIAGNOSIS_EVIDENCE)}"
    return (DIAGNOSIS_EVIDENCE[got] + "; check the rules in the task's order, on this trace's numbers (the first "
            "rule that holds wins)")


def check_diagnose(fn, paths: dict) -> None:
    """fn(trace_path) -> the name of the main problem (a key of trace.FINDINGS) or "none" for a healthy run."""
    failures = []
    for name, path in paths.items():
        got = _call(fn, path)
        if got != DIAGNOSES[name]:
            failures.append(f"trace {path.name}: {got!r} is not what this trace shows ({diagnose_hint(got)})")
    _all_cases("diagnose", failures, len(paths), "diagnose names every fault from its trace, and calls the healthy run healthy",
               hint="read the numbers the task lists from each trace; the file names are shuffled on every run and "
                    "tell nothing")


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



def _continuation_failure(fn, tokens, tau, max_ngram, hidden: bool = False) -> str | None:
    """None if ``fn`` gives the reference continuation, else what went wrong (with the likely mistake named; with
    ``hidden``, never the right continuation)."""
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
    if got == _hint_reference("continuation", tokens, tau, max_ngram, oldest=True):
        hint = " (that follows the OLDEST occurrence: take the most recent one)"
    elif got == _hint_reference("continuation", tokens, tau, max_ngram, shortest_first=True):
        hint = " (a shorter n-gram won: try the LONGEST n-gram first)"
    elif len(got) > tau:
        hint = f" (at most τ = {tau} tokens)"
    if hidden:
        return f"tokens {tokens}, tau={tau}, max_ngram={max_ngram}: got {got}, not prompt lookup's proposal{hint}"
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



def check_mix_speedup(speedup_fn, mix_fn) -> None:
    """speedup_fn(alpha, c, tau, cost_curve) -> E(α, τ) / (τ·c + T(τ+1)/T(1)), compared with ``cost_model.Costs``;
    mix_fn(alphas, c, tau, cost_curve, mix) -> the overall speedup over a request mix, 1 / Σ share / S(α_kind)."""
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
    for label, alphas, c, tau, curve_name, mix in MIX_CASES:
        total += 1
        curve = COST_CURVES[curve_name]
        where = f"{label}: alphas {alphas}, c={c}, τ={tau}, {curve_name} T(k), mix {mix}"
        got = _attempt(failures, where, mix_fn, dict(alphas), c, tau, dict(curve), dict(mix))
        if got is _FAILED:
            continue
        problem = _mix_problem(got, alphas, c, tau, curve, mix)
        if problem:
            expected = references.mix_speedup(alphas, c, tau, curve, mix)
            failures.append(f"{where}: expected {expected:.4f}, got {got!r}{problem}")
    _all_cases("drafter_speedup / mix_speedup", failures, total,
               "drafter_speedup agrees with the cost model on 3 cost curves, and mix_speedup prices every request mix")


MIX_CASES = [  # (what the case is about, α per kind of request, c, τ, cost curve, each kind's share of the tokens)
    ("code and chat", {"code": 0.8, "chat": 0.2}, 0.0, 4, "CPU-like", {"code": 0.5, "chat": 0.5}),
    ("mostly chat", {"code": 0.8, "chat": 0.2}, 0.0, 4, "CPU-like", {"code": 0.2, "chat": 0.8}),
    ("a draft model", {"code": 0.6, "chat": 0.45}, 0.1, 3, "steep", {"code": 0.3, "chat": 0.7}),
    ("one kind only", {"code": 0.7, "chat": 0.1}, 0.05, 2, "flat", {"code": 1.0, "chat": 0.0}),
    ("every draft right on one kind", {"quote": 1.0, "open": 0.3}, 0.02, 5, "CPU-like", {"quote": 0.25, "open": 0.75}),
    ("three kinds", {"code": 0.9, "chat": 0.3, "summary": 0.6}, 0.1, 6, "steep",
     {"code": 0.2, "chat": 0.5, "summary": 0.3}),
]


def _mix_problem(got, alphas, c, tau, curve, mix, hidden: bool = False) -> str | None:
    """None if ``got`` is the mix's overall speedup, else a note (the likely mistake named) to append to the case."""
    expected = references.mix_speedup(alphas, c, tau, curve, mix)
    try:
        value = float(got)
    except (TypeError, ValueError):
        return " (return a number)"
    if abs(value - expected) <= 1e-6:
        return None
    kinds = [kind for kind, share in mix.items() if share]
    speeds = [_hint_reference("speedup", alphas[k], c, tau, curve) for k in kinds]
    mean_of_speedups = None if None in speeds else sum(mix[k] * s for k, s in zip(kinds, speeds))
    at_mean_alpha = _hint_reference("speedup", sum(mix[k] * alphas[k] for k in kinds), c, tau, curve)
    if mean_of_speedups is not None and abs(value - mean_of_speedups) < 1e-6:
        return (" (that is the share-weighted mean of the kinds' speedups: times add up, not speeds; add up each kind's "
                "time per token, share / S)")
    if at_mean_alpha is not None and abs(value - at_mean_alpha) < 1e-6:
        return " (that is the speedup at the mix's mean α: S is not linear in α, so price each kind at its own α)"
    return "" if not hidden else " (wrong)"


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


BIGRAM_CASES = [  # (what the case is about, the sequence, τ)
    ("the task's example: 4 was followed by 7, then by 9", [4, 7, 4, 9, 7, 4], 3),
    ("the last token never occurred before", [1, 2, 3, 1, 5], 4),
    ("a token followed by itself", [3, 3, 3], 4),
    ("the most recent follower of 1 is 5, its first was 2", [1, 2, 1, 5, 2, 8, 1], 5),
    ("followers that changed along the way", [5, 1, 5, 2, 6, 1, 9, 5, 6, 2, 1], 6),
    ("a repeated run", [9, 8, 7, 9, 8, 7, 9], 4),
    ("one token", [7], 3),
    ("τ = 0", [4, 7, 4, 9, 7, 4], 0),
    ("τ = 1", [2, 6, 2, 4, 2], 1),
]


def _proposal_problem(draft, sequence, tau: int, vocab_size: int, hidden: bool = False) -> str | None:
    """None if ``draft`` is the context bigram rule's proposal after ``sequence`` with one-hot q, else what is wrong
    (a likely mistake named; never the right tokens)."""
    tokens, q = getattr(draft, "tokens", None), getattr(draft, "q", None)
    if not isinstance(q, torch.Tensor) or not isinstance(tokens, (list, tuple)):
        return f"return a Draft(tokens=[...], q=tensor), got {type(draft).__name__}"
    try:
        tokens = [int(t) for t in tokens]
    except (TypeError, ValueError):
        return "tokens must be a list of token ids"
    expected = references.bigram_proposal(sequence, tau)
    if tokens != expected:
        if len(tokens) > tau:
            return f"{len(tokens)} tokens; propose at most τ"
        if tokens and tokens == _hint_reference("bigram_proposal", sequence, tau, first=True):
            return ("those are the FIRST followers; the rule takes the token after each token's MOST RECENT occurrence "
                    "that has a token after it")
        if len(tokens) != len(expected):
            return (f"{len(tokens)} tokens proposed, a wrong number" if hidden else
                    f"{len(tokens)} tokens proposed; the rule gives " + ("none: the last token has no follower"
                    if not expected else "τ: stop only at a token without a follower"))
        at = next(i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b)
        return f"wrong tokens from position {at} of the proposal on"
    if tuple(q.shape) != (len(tokens), vocab_size):
        return (f"q has shape {tuple(q.shape)}, expected ({len(tokens)}, {vocab_size}): one row per proposed token, "
                "over the whole vocabulary")
    if len(tokens):
        one_hot = torch.zeros(len(tokens), vocab_size)
        one_hot[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
        if not torch.allclose(q.detach().float().cpu(), one_hot, atol=1e-6):
            return "each row of q must be one-hot at its proposed token (the proposal is certain)"
    return None


def _check_drafter_proposals(drafter, vocab_size: int, cases, label: str, failures: list, *,
                             hidden: bool = False) -> tuple[int, int]:
    """Call ``start`` and ``propose`` directly on each (description, sequence, τ) and compare the Draft with the context
    bigram rule (``references.bigram_proposal``) and one-hot q. Returns (cases, tokens proposed); a failure per case."""
    count = proposed = 0
    for description, sequence, tau in cases:
        count += 1
        where = f"{label}, {description}: propose({sequence}, tau={tau})"
        ids = torch.tensor([list(sequence)])
        if _attempt(failures, where, drafter.start, ids, max_length=len(sequence) + 16) is _FAILED:
            continue
        draft = _attempt(failures, where, drafter.propose, ids, tau)
        if draft is _FAILED:
            continue
        problem = _proposal_problem(draft, sequence, tau, vocab_size, hidden)
        if problem and not hidden:
            expected = references.bigram_proposal(sequence, tau)
            if problem.startswith("wrong tokens") or "FIRST followers" in problem or "proposed; the rule" in problem:
                problem = f"expected {expected}, got {list(getattr(draft, 'tokens', []))}: {problem}"
        if problem:
            failures.append(f"{where}: {problem}")
        else:
            proposed += len(draft.tokens)
    return count, proposed


def check_own_drafter(drafter_class) -> None:
    """drafter_class(vocab_size) -> a Drafter whose ``propose`` follows the context bigram rule (each token's follower
    is the token after its most recent occurrence that has one; chain from the last token up to τ times, stopping at a
    token without a follower; one-hot q), compared proposal by proposal on hand-made sequences; then speculative
    decoding with it must reproduce the target's greedy output exactly, with and without a cache, at τ = 1, 3, 5, and
    a sampling run must work too."""
    from ..speculative import speculative_generate

    failures, total, drafted, accepted = [], 0, 0, 0
    drafter = _call(drafter_class, 64)
    total, proposed = _check_drafter_proposals(drafter, 64, BIGRAM_CASES, "vocabulary 64", failures)
    if failures:
        _all_cases(getattr(drafter_class, "__name__", "your drafter"), failures, total, "",
                   hint="follows[x] = the token after x's most recent occurrence that has a token after it, read from "
                        "the sequence alone; start from the last token; one-hot rows of q")
    repeating = [5, 9, 3, 7, 5, 9, 3, 11, 5, 9]
    for seed in range(3):
        target = tiny_llama(seed, peaked=2.0)
        drafter = _call(drafter_class, target.config.vocab_size)
        label = f"model #{seed}"
        own = autoregressive_generate(target, [3, 4], 14).tokens  # the target's own text: it often repeats itself
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
        _attempt(failures, f"{label}, sampling rule", speculative_generate, target, drafter, torch.tensor([repeating]),
                 12, tau=3, rule="sampling", temperature=1.0, seed=seed)
    _all_cases(getattr(drafter_class, "__name__", "your drafter"), failures, total,
               f"your drafter proposes what the context bigram rule gives on {len(BIGRAM_CASES)} sequences, keeps the "
               f"target's greedy output on 3 tiny models (τ = 1, 3, 5, cache on and off), and sampling runs; in the "
               f"greedy runs the target accepted {accepted} of its {drafted} drafts")


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
