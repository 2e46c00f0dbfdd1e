"""Measuring a draft/target pair: greedy acceptance rate α and cost ratio c.

α (greedy) = fraction of positions where the draft's argmax, given the same prefix, equals the target's
argmax, measured along the target's own greedy continuation.  c = draft time per token / target time
per token, both with KV caches, measured side by side.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

from ..generation import as_input_ids, autoregressive_generate


@dataclass
class PromptAcceptance:
    prompt: str
    positions: int
    accepted: int
    target_ms_per_token: float
    draft_ms_per_token: float

    @property
    def alpha(self) -> float:
        return self.accepted / self.positions if self.positions else float("nan")


def _steady_ms(times: list[float]) -> float:
    """Median milliseconds per token, leaving out the first (prompt) pass."""
    later = times[1:] or times
    return 1000 * statistics.median(later)


@torch.no_grad()
def greedy_matches(draft, input_ids, target_tokens: list[int]) -> list[bool]:
    """At each of ``target_tokens``: does the draft's argmax, given the same prefix, equal it? (teacher forcing)"""
    ids = as_input_ids(input_ids, draft)
    if not target_tokens:
        return []
    sequence = torch.cat([ids, torch.tensor([target_tokens], device=ids.device)], dim=1)
    predictions = draft(sequence).logits[0, ids.shape[1] - 1: -1].argmax(-1)
    return (predictions.cpu() == torch.tensor(target_tokens)).tolist()


def greedy_agreement(draft, input_ids, target_tokens: list[int]) -> int:
    """How many of ``target_tokens`` the draft's argmax predicts, each given the same prefix (teacher forcing)."""
    return sum(greedy_matches(draft, input_ids, target_tokens))


def measure_prompt(target, draft, tokenizer, prompt: str, max_new_tokens: int) -> PromptAcceptance:
    from ..models import chat_prompt

    ids = chat_prompt(tokenizer, prompt)
    target_run = autoregressive_generate(target, ids, max_new_tokens, eos_token_id=tokenizer.eos_token_id)
    draft_run = autoregressive_generate(draft, ids, max(len(target_run.tokens), 2))
    return PromptAcceptance(prompt=prompt, positions=len(target_run.tokens),
                            accepted=greedy_agreement(draft, ids, target_run.tokens),
                            target_ms_per_token=_steady_ms(target_run.token_times),
                            draft_ms_per_token=_steady_ms(draft_run.token_times))


def summarize(rows: list[PromptAcceptance]) -> dict:
    positions = sum(r.positions for r in rows)
    target_ms = statistics.median(r.target_ms_per_token for r in rows)
    draft_ms = statistics.median(r.draft_ms_per_token for r in rows)
    return {"prompts": len(rows), "positions": positions, "alpha": sum(r.accepted for r in rows) / max(positions, 1),
            "target_ms_per_token": target_ms, "draft_ms_per_token": draft_ms, "c": draft_ms / target_ms,
            "rows": [asdict(r) | {"alpha": r.alpha} for r in rows]}


def acceptance_report(target, draft, tokenizer, prompts: list[str], max_new_tokens: int = 128, *, progress: bool = True) -> dict:
    """α and c over ``prompts``, prompt by prompt."""
    from tqdm.auto import tqdm

    rows = [measure_prompt(target, draft, tokenizer, p, max_new_tokens) for p in tqdm(prompts, desc="prompts", disable=not progress)]
    return summarize(rows)


def format_report(report: dict) -> str:
    lines = [f"{'prompt':52s} {'tokens':>6s} {'alpha':>6s} {'draft ms':>9s} {'target ms':>9s}"]
    for r in report["rows"]:
        text = r["prompt"] if len(r["prompt"]) <= 50 else r["prompt"][:47] + "..."
        lines.append(f"{text:52s} {r['positions']:6d} {r['alpha']:6.3f} {r['draft_ms_per_token']:9.1f} {r['target_ms_per_token']:9.1f}")
    lines.append("")
    lines.append(f"greedy acceptance rate alpha = {report['alpha']:.3f} over {report['positions']} positions, {report['prompts']} prompts")
    lines.append(f"time per token (median, KV cache): draft {report['draft_ms_per_token']:.1f} ms, target "
                 f"{report['target_ms_per_token']:.1f} ms  ->  c = {report['c']:.3f} (1/c = {1 / report['c']:.1f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the cost model (cost_model.py)
from .cost_model import expected_tokens_per_step  # noqa: E402  (kept importable from here)


def expected_speedup(alpha: float, tau: int, c: float, verify_ratio: float) -> float:
    """Speedup over target-only decoding: E[tokens per step] / (τ·c + T(τ+1)/T(1)),
    with c = draft/target time per token and verify_ratio = T(τ+1)/T(1) measured on the machine."""
    return expected_tokens_per_step(alpha, tau) / (tau * c + verify_ratio)
