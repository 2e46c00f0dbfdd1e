"""Deliberately broken runs, for learning to diagnose them from a trace.

    with injected("stale_cache", target, draft):
        result = speculative_generate(target, draft, ids, 48, trace="broken.jsonl")
    print(analyse_trace("broken.jsonl"))
    print(lossless_check(target, ids, result))

Faults (``FAULTS``):
* "no_chat_template": the draft reads the bare request while the target reads it inside the chat template
  (``broken_run`` builds both prompts; with ``injected`` give ``speculative_generate`` a ``draft_input_ids``).
* "slow_draft": every draft pass costs half a target pass more (a draft far too big for its job).
* "token_by_token_verification": the loop verifies with τ + 1 one-token target passes instead of one pass.
* "slow_kernels": the target on the stock kernels of notebook 00, on a CPU where a pass over k tokens costs much more
  than a one-token pass. Where stock kernels are not slow, the fault adds that cost: a quarter of a one-token pass for
  every extra token.
* "stale_cache": the target's cache is never rolled back, and the loop feeds it only the newest tokens, so the target
  reads rejected drafts as if they were text. The only fault here that changes the output: fast and wrong.
Everything is undone when the ``with`` block ends.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .. import speculative
from ..cache import cache_length
from .clock import added_cost
from ..draft import distribution

FAULTS = ("no_chat_template", "slow_draft", "token_by_token_verification", "slow_kernels", "stale_cache")


def check_fault(fault: str) -> str:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(map(repr, FAULTS))}")
    return fault


def one_token_ms(model, repeats: int = 5) -> float:
    """Median ms of one cached one-token pass of ``model`` (after a 32-token prefix)."""
    from ..generation import forward_time

    return 1000 * forward_time(model, 32, 1, repeats=repeats)


@torch.no_grad()
def verify_token_by_token(target, input_ids, draft_ids, *, past_key_values=None, temperature: float = 0.0):
    """The fault "token_by_token_verification": the same distributions as ``verify``, from τ + 1 target passes."""
    draft = torch.as_tensor(list(draft_ids), dtype=torch.long, device=input_ids.device).view(1, -1)
    sequence = torch.cat([input_ids, draft], dim=1)
    first = input_ids.shape[1]
    rows = []
    if past_key_values is None:
        for end in range(first, sequence.shape[1] + 1):
            rows.append(target(sequence[:, :end], use_cache=False).logits[0, -1])
    else:
        rows.append(target(sequence[:, cache_length(past_key_values):first], past_key_values=past_key_values,
                           use_cache=True).logits[0, -1])
        for j in range(draft.shape[1]):
            rows.append(target(sequence[:, first + j: first + j + 1], past_key_values=past_key_values,
                               use_cache=True).logits[0, -1])
    return distribution(torch.stack(rows), temperature)


@contextmanager
def injected(fault: str, target, draft):
    """Run the ``with`` block with ``fault`` in place (see the module's docstring); restores everything after."""
    check_fault(fault)
    undo = []
    try:
        if fault == "slow_draft":
            context = added_cost(draft, ms_per_pass=0.5 * one_token_ms(target))
            context.__enter__()
            undo.append(lambda: context.__exit__(None, None, None))
        elif fault == "slow_kernels":
            from .kernels import kernel_path, use_kernels

            before, rows = kernel_path(target), getattr(target, "onednn_min_rows", None)
            use_kernels(target, "stock")
            undo.append(lambda: use_kernels(target, before, min_rows=rows))
            context = added_cost(target, ms_per_extra_token=0.25 * one_token_ms(target))
            context.__enter__()
            undo.append(lambda: context.__exit__(None, None, None))
        elif fault == "token_by_token_verification":
            real = speculative.verify
            speculative.verify = verify_token_by_token
            undo.append(lambda: setattr(speculative, "verify", real))
        elif fault == "stale_cache":
            real_verify, real_rollback = speculative.verify, speculative.rollback
            target_caches = set()

            def verify_newest_only(model, input_ids, draft_ids, *, past_key_values=None, temperature=0.0):
                # the bug: feed "the last token and the drafts", trusting the cache to hold exactly the rest
                if past_key_values is None or cache_length(past_key_values) == 0:
                    return real_verify(model, input_ids, draft_ids, past_key_values=past_key_values, temperature=temperature)
                target_caches.add(id(past_key_values))
                draft_ids = torch.as_tensor(list(draft_ids), dtype=torch.long, device=input_ids.device).view(1, -1)
                logits = model(torch.cat([input_ids[:, -1:], draft_ids], dim=1), past_key_values=past_key_values,
                               use_cache=True).logits[0]
                return distribution(logits, temperature)

            def rollback_draft_only(cache, length):
                if id(cache) not in target_caches:
                    real_rollback(cache, length)

            speculative.verify, speculative.rollback = verify_newest_only, rollback_draft_only
            undo.append(lambda: (setattr(speculative, "verify", real_verify), setattr(speculative, "rollback", real_rollback)))
        yield fault
    finally:
        for step in reversed(undo):
            step()


def broken_run(fault: str, target, draft, tokenizer, prompt: str, max_new_tokens: int = 48, *, tau=3, trace=None,
               **kwargs):
    """``speculative_generate`` on a chat ``prompt`` with ``fault`` injected (greedy, with caches)."""
    from ..models import chat_prompt

    check_fault(fault)
    ids = chat_prompt(tokenizer, prompt)
    if fault == "no_chat_template":
        bare = tokenizer(prompt, return_tensors="pt").input_ids.to(ids.device)
        return speculative.speculative_generate(target, draft, ids, max_new_tokens, tau=tau, trace=trace,
                                                eos_token_id=tokenizer.eos_token_id, draft_input_ids=bare, **kwargs)
    with injected(fault, target, draft):
        return speculative.speculative_generate(target, draft, ids, max_new_tokens, tau=tau, trace=trace,
                                                eos_token_id=tokenizer.eos_token_id, **kwargs)


def lossless_check(target, input_ids, result, *, eos_token_id=None, reference=None) -> dict:
    """Compare a speculative ``result`` with the target's own greedy decoding of ``input_ids``:
    {"identical", "position" of the first difference, "top2_margin" of the target's logits there}. A tiny margin
    (below about 1e-4) is a near-tie that rounding can flip; a large one is a bug. ``reference``: the target's greedy
    tokens for ``input_ids`` when already computed (at least as many as the result has), so they are not decoded again."""
    from ..generation import as_input_ids, autoregressive_generate, mismatch_margin

    ids = as_input_ids(input_ids, target)
    if reference is None or len(reference) < len(result.tokens):
        reference = autoregressive_generate(target, ids, max(len(result.tokens), 1), eos_token_id=eos_token_id).tokens
    expected = list(reference[: len(result.tokens)])
    position, margin = mismatch_margin(target, ids, expected, result.tokens)
    return {"identical": position is None and len(expected) == len(result.tokens), "position": position,
            "top2_margin": margin}
