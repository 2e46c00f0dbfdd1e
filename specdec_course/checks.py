"""Checks for the exercise notebooks: immediate, specific feedback on a learner's function.

Each check compares the learner's function with the package's reference on small random
models (no download, seconds to run). A stub that still raises NotImplementedError is
reported as "not attempted yet".
"""
from __future__ import annotations

import torch

from .generation import autoregressive_generate
from .models import tiny_llama


class CheckFailed(AssertionError):
    """The learner's function gave a wrong result; the message says for which input."""


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


class _ForwardLog:
    """Records the number of new tokens in every forward pass of a model."""

    def __init__(self, model):
        self.lengths: list[int] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is not None:
            self.lengths.append(int(ids.shape[-1]))

    def close(self):
        self.handle.remove()


# --------------------------------------------------------------------------- exercise 00
def check_greedy_next_token(fn) -> None:
    """fn(model, input_ids) -> the id of the most likely next token."""
    for seed, model, prompt in _cases():
        with torch.no_grad():
            expected = int(model(prompt).logits[0, -1].argmax())
        got = _call(fn, model, prompt)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise CheckFailed(f"greedy_next_token should return ONE token id, got a tensor of shape {tuple(got.shape)}")
            got = got.item()
        if int(got) != expected:
            raise CheckFailed(f"model #{seed}, prompt {prompt[0].tolist()}: expected token {expected}, got {got}. "
                              "Take the argmax over the vocabulary at the LAST position of the logits.")
    passed("greedy_next_token picks the argmax of the last position on 6 random models")


def check_greedy_generate(fn) -> None:
    """fn(model, input_ids, max_new_tokens) -> the new token ids, greedy, with a KV cache."""
    for seed, model, prompt in _cases():
        for max_new in (0, 1, 7):
            expected = autoregressive_generate(model, prompt, max_new).tokens
            log = _ForwardLog(model)
            try:
                got = _as_list(_call(fn, model, prompt, max_new))
            finally:
                log.close()
            if got != expected:
                raise CheckFailed(f"model #{seed}, prompt {prompt[0].tolist()}, max_new_tokens={max_new}: "
                                  f"expected {expected}, got {got}")
            if max_new > 1 and any(length != 1 for length in log.lengths[1:]):
                raise CheckFailed(f"model #{seed}: the forward passes saw {log.lengths} new tokens; with a KV cache, "
                                  "only the first pass reads the prompt and each later pass feeds ONE token")
    passed("greedy_generate matches the reference on 6 random models (0, 1 and 7 new tokens) and uses the KV cache")


# --------------------------------------------------------------------------- exercise 08
def check_draft_agreement(fn) -> None:
    """fn(draft, input_ids, target_tokens) -> fraction of target tokens the draft's argmax predicts (teacher forcing)."""
    from .analysis import greedy_agreement

    for seed, model, prompt in _cases(4):
        target_tokens = autoregressive_generate(model, prompt, 8).tokens
        draft = tiny_llama(seed + 50, vocab_size=model.config.vocab_size, peaked=2.0)
        for tokens in (target_tokens, autoregressive_generate(draft, prompt, 8).tokens):
            expected = greedy_agreement(draft, prompt, tokens) / len(tokens)
            got = float(_call(fn, draft, prompt, tokens))
            if abs(got - expected) > 1e-9:
                raise CheckFailed(f"model #{seed}, prompt {prompt[0].tolist()}, target tokens {tokens}: expected "
                                  f"{expected:.3f}, got {got:.3f}. Feed prompt + target tokens in ONE pass; the logits at "
                                  "position i predict token i + 1.")
    passed("draft_agreement matches the reference (teacher-forced greedy agreement) on 8 cases")


def check_expected_tokens(fn) -> None:
    """fn(alpha, tau) -> (1 − α^{τ+1}) / (1 − α)."""
    from .cost_model import expected_tokens_per_step

    for alpha in (0.0, 0.3, 0.5, 0.8, 0.99, 1.0):
        for tau in (1, 2, 4, 8):
            expected = expected_tokens_per_step(alpha, tau)
            got = _call(fn, alpha, tau)
            if got is None or abs(float(got) - expected) > 1e-6:
                hint = " (at α = 1 every draft is accepted: τ + 1 tokens)" if alpha == 1 else ""
                raise CheckFailed(f"alpha={alpha}, tau={tau}: expected {expected:.4f}, got {got}{hint}")
    passed("expected_tokens_per_step is right for α in 0..1 and τ in 1..8")


def check_distillation_loss(fn) -> None:
    """fn(draft_logits (n, vocab), target_logits (n, vocab)) -> mean cross-entropy on the target's argmax."""
    gen = torch.Generator().manual_seed(0)
    for n, vocab in ((1, 5), (7, 11), (16, 64)):
        draft_logits = torch.randn(n, vocab, generator=gen) * 2
        target_logits = torch.randn(n, vocab, generator=gen) * 2
        expected = float(torch.nn.functional.cross_entropy(draft_logits, target_logits.argmax(-1)))
        got = _call(fn, draft_logits, target_logits)
        got = float(got) if got is not None else None
        if got is None or abs(got - expected) > 1e-4:
            raise CheckFailed(f"{n} positions, vocabulary {vocab}: expected {expected:.4f}, got {got}. The label is the "
                              "TARGET's argmax; the loss is −log softmax(draft logits)[label], averaged.")
    passed("distillation_loss is the cross-entropy of the draft on the target's argmax labels")


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
    from .draft import draft_tokens

    for seed, _, draft, prompt in _pair_cases():
        for tau in (1, 3, 6):
            expected = draft_tokens(draft, prompt, tau).tokens
            got = _as_list(_call(fn, draft, prompt, tau))
            if got != expected:
                hint = ""
                if len(set(got)) == 1 and len(set(expected)) > 1:
                    hint = " All your tokens are the same: is each one conditioned on the draft tokens before it?"
                raise CheckFailed(f"draft #{seed}, prompt {prompt[0].tolist()}, tau={tau}: expected {expected}, got {got}.{hint}")
    passed("draft_tokens proposes the same greedy tokens as the reference (τ = 1, 3, 6 on 4 models)")


def check_verify(fn) -> None:
    """fn(target, input_ids, draft_ids) -> (τ+1, vocab) target probabilities, from ONE forward pass."""
    from .verify import verify

    for seed, target, draft, prompt in _pair_cases():
        drafts = autoregressive_generate(draft, prompt, 4).tokens
        expected = verify(target, prompt, drafts)
        log = _ForwardLog(target)
        try:
            got = _call(fn, target, prompt, drafts)
        finally:
            log.close()
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckFailed(f"expected a tensor of shape {tuple(expected.shape)} (τ + 1 rows), got {shape}")
        if not torch.allclose(got.float(), expected, atol=1e-4):
            row = int((got.float() - expected).abs().amax(-1).argmax())
            raise CheckFailed(f"model #{seed}: row {row} differs from the target's distribution after prompt + "
                              f"{row} draft tokens. Did you apply softmax to the last τ + 1 positions?")
        if len(log.lengths) != 1:
            raise CheckFailed(f"model #{seed}: {len(log.lengths)} forward passes; verification must use ONE")
    passed("verify returns the τ + 1 target distributions from one forward pass")


def check_textbook_accept(fn) -> None:
    """fn(p_tokens, q_tokens, r) -> n, the number of consecutively accepted drafts."""
    from .accept import consecutive_accepted

    cases = [([0.8, 0.5, 0.1, 0.6, 0.9], [0.6, 0.7, 0.4, 0.3, 0.5], [0.9, 0.6, 0.3, 0.1, 0.2]),
             ([0.2, 0.9], [0.4, 0.1], [0.6, 0.0]), ([0.3, 0.3, 0.3], [0.3, 0.6, 0.9], [1.0, 0.5, 0.0]),
             ([0.05], [0.5], [0.1])]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        cases.append(tuple(torch.rand(5, generator=gen).tolist() for _ in range(3)))
    for p, q, r in cases:
        expected = consecutive_accepted([pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p, q, r)])
        got = _call(fn, list(p), list(q), list(r))
        if got != expected:
            raise CheckFailed(f"p={[round(x, 2) for x in p]}, q={[round(x, 2) for x in q]}, r={[round(x, 2) for x in r]}: "
                              f"expected n = {expected}, got {got}. Accept if p ≥ q, else if r ≤ p/q; stop at the first rejection.")
    passed("textbook_accept counts the consecutive accepted drafts on 24 cases")


def check_greedy_correction(fn) -> None:
    """fn(p, n) -> the target's argmax at row n."""
    gen = torch.Generator().manual_seed(1)
    for tau in (1, 3, 5):
        p = torch.softmax(torch.randn(tau + 1, 20, generator=gen) * 3, -1)
        for n in range(tau + 1):
            got = _call(fn, p, n)
            got = int(got) if got is not None else None
            if got != int(p[n].argmax()):
                raise CheckFailed(f"tau={tau}, n={n}: expected token {int(p[n].argmax())} (argmax of the target's row n), got {got}")
    passed("greedy_correction takes the target's argmax right after the accepted drafts")


def check_sequence_after_step(fn) -> None:
    """fn(prefix, drafts, n, correction) -> prefix + drafts[:n] + [correction]."""
    cases = [([5, 6], [7, 8, 9], 2, 4), ([1], [2, 3], 0, 9), ([1, 2, 3], [4, 5], 2, 6), ([8], [], 0, 3)]
    for prefix, drafts, n, correction in cases:
        expected = prefix + drafts[:n] + [correction]
        got = _as_list(_call(fn, list(prefix), list(drafts), n, correction))
        if got != expected:
            raise CheckFailed(f"prefix {prefix}, drafts {drafts}, n={n}, correction {correction}: expected {expected}, got {got}")
    passed("sequence_after_step: prefix, then the n accepted drafts, then the correction token")


# --------------------------------------------------------------------------- exercise 05
def check_rollback(fn) -> None:
    """fn(layers, length) -> the per-layer (keys, values) with only the first ``length`` positions kept."""
    gen = torch.Generator().manual_seed(5)
    for n_layers, total in ((1, 4), (3, 9)):
        layers = [(torch.randn(1, 2, total, 4, generator=gen), torch.randn(1, 2, total, 4, generator=gen)) for _ in range(n_layers)]
        for length in range(total + 1):
            got = _call(fn, [(k.clone(), v.clone()) for k, v in layers], length)
            if got is None or len(got) != n_layers:
                raise CheckFailed(f"{n_layers} layers in, expected {n_layers} (keys, values) pairs out, got {got if got is None else len(got)}")
            for index, ((k, v), (gk, gv)) in enumerate(zip(layers, got)):
                if tuple(gk.shape) != (1, 2, length, 4) or tuple(gv.shape) != (1, 2, length, 4):
                    raise CheckFailed(f"rolling {total} positions back to {length}: layer {index} has shapes "
                                      f"{tuple(gk.shape)}, {tuple(gv.shape)}; expected (1, 2, {length}, 4). The sequence "
                                      "axis is dimension 2.")
                if not (torch.equal(gk, k[:, :, :length]) and torch.equal(gv, v[:, :, :length])):
                    raise CheckFailed(f"rolling back to {length}: layer {index} does not keep the FIRST {length} positions")
    passed("rollback keeps exactly the first `length` positions of every layer's keys and values")


def check_kv_bytes(fn) -> None:
    """fn(config, bytes_per_element) -> KV-cache bytes per token."""
    from types import SimpleNamespace

    for layers, heads, kv_heads, hidden, size in ((30, 9, 3, 576, 4), (2, 4, 2, 32, 2), (32, 32, 8, 4096, 2)):
        config = SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                 hidden_size=hidden, head_dim=hidden // heads)
        expected = 2 * layers * kv_heads * (hidden // heads) * size
        got = _call(fn, config, size)
        if got != expected:
            raise CheckFailed(f"{layers} layers, {kv_heads} KV heads of size {hidden // heads}, {size} bytes per element: "
                              f"expected {expected}, got {got}. Keys AND values, for KV heads (not query heads).")
    passed("kv_bytes_per_token = 2 × layers × kv_heads × head_dim × bytes per element")


def _all_cases(name: str, failures: list[str], total: int, ok_message: str) -> None:
    """Report every failed case at once, a line each (at most 8), or the success message."""
    if failures:
        shown = failures[:8] + ([f"... and {len(failures) - 8} more"] if len(failures) > 8 else [])
        raise CheckFailed(f"{name}: {len(failures)} of {total} cases wrong:\n  " + "\n  ".join(shown))
    passed(ok_message)


# --------------------------------------------------------------------------- exercise 06
def check_kept_fraction(fn) -> None:
    """fn(alpha, tau) -> κ = α (1 − α^τ) / ((1 − α) τ), the kept fraction under independent positions."""
    from .cost_model import kept_fraction

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


def _reference_choice(target_ms: dict, draft_ms: float, alpha: float, max_tau: int) -> tuple[int, dict]:
    from .cost_model import Costs, expected_tokens_per_step

    costs = Costs(target_ms, draft_ms)
    scores = {t: costs.speedup(expected_tokens_per_step(alpha, t), t) for t in range(1, max_tau + 1)}
    return max(scores, key=scores.get), scores


def check_choose_tau(fn) -> None:
    """fn(target_ms, draft_ms, alpha, max_tau) -> the τ in 1..max_tau with the largest predicted speedup."""
    curves = {"flat": {k: 30.0 for k in range(1, 14)}, "steep": {k: 30.0 * (1 + 0.15 * (k - 1)) for k in range(1, 14)},
              "jump at 4": {k: 30.0 if k < 4 else 45.0 for k in range(1, 14)}}
    failures, total = [], 0
    for name, target_ms in curves.items():
        for alpha in (0.3, 0.7, 0.9):
            for draft_ms in (1.0, 6.0):
                total += 1
                expected, scores = _reference_choice(target_ms, draft_ms, alpha, 12)
                got = _call(fn, dict(target_ms), draft_ms, alpha, 12)
                if got != expected and not (got in scores and scores[got] >= scores[expected] - 1e-9):
                    failures.append(f"T(k) {name}, d={draft_ms} ms, α={alpha}: expected τ={expected} "
                                    f"({scores[expected]:.2f}x), got {got!r}"
                                    + (f" ({scores[got]:.2f}x)" if got in scores else ""))
    _all_cases("choose_tau", failures, total, "choose_tau picks the fastest predicted τ on 18 cost curves")


def check_measured_costs(fn, model) -> dict:
    """fn(model, ks) -> {k: ms of one cached pass over k new tokens}; checked for shape and against a fresh T(1)."""
    from .generation import forward_time

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
    from .trace import analyse_trace

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

    from .speculative import speculative_generate

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
    """fn(target_ms, draft_ms, alpha, max_step_ms, max_tau) -> fastest τ whose step τ·d + T(τ+1) fits; 1 if none does."""
    from .cost_model import Costs, expected_tokens_per_step

    target_ms = {k: 30.0 * (1 + 0.05 * (k - 1)) for k in range(1, 14)}
    failures, total = [], 0
    for alpha in (0.4, 0.8, 0.95):
        for bound in (20.0, 36.0, 45.0, 80.0):
            total += 1
            costs = Costs(target_ms, 2.0)
            fitting = [t for t in range(1, 13) if costs.step_ms(t) <= bound]
            expected = max(fitting, key=lambda t: costs.speedup(expected_tokens_per_step(alpha, t), t)) if fitting else 1
            got = _call(fn, dict(target_ms), 2.0, alpha, bound, 12)
            if got != expected:
                failures.append(f"α={alpha}, bound {bound} ms: expected τ={expected}, got {got!r}"
                                + (" (no τ fits: fall back to 1)" if not fitting else ""))
    _all_cases("capped_tau", failures, total, "capped_tau respects the step bound and is fastest within it")


def fault_traces(folder) -> dict:
    """{fault name or "healthy": trace path} for each fault of ``faults.FAULTS``, on tiny models (a few seconds)."""
    from pathlib import Path

    from . import faults
    from .speculative import speculative_generate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from .models import noisy_copy

    target = tiny_llama(0, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.1, seed=1)  # usually, not always, right
    prompt = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    paths = {}
    with faults.added_cost(target, ms_per_pass=4):  # a tiny target that costs like a real one
        for fault in ("healthy",) + faults.FAULTS:
            path = paths[fault] = folder / f"{fault}.jsonl"
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
