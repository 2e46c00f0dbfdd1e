"""Training requests written by the target itself (self-instruct, without downloading anything).

An instruction-tuned model has learned what user messages look like. Give it the chat template only up to
where the user's message begins (the "pre-query" text, as in Magpie, Xu et al. 2024) and sample: it writes a
plausible user request, ending with its end-of-turn token. A short opening phrase after the pre-query
("Summarize the following text", "Write a Python function", "What is 17 ×") steers it towards a task type,
so the requests cover questions, instructions, creative writing, code, arithmetic, rewriting given text and
more. The target then answers each request (``distill.make_data``); the draft learns from those answers.

    python -m specdec_course.distill requests --count 6000     # writes build/requests.json
"""
from __future__ import annotations

import random
import re

import torch

from .generation import left_padded

# Openings that steer the request toward a kind of task; "" lets the model choose freely (the most common draw).
STARTERS = (
    "", "", "", "", "", "", "", "",
    "Can you", "Could you please", "How do I", "How does", "What is", "What are", "Why do", "Why is", "Is it true that",
    "Should I", "Which", "When", "Who was", "Where can", "Tell me", "I need", "I'm", "My", "Help me", "Please",
    "Explain", "Describe", "Compare", "List", "Give me", "Suggest", "Recommend", "Plan", "Create", "Design",
    "Write a", "Write a short story", "Write a poem", "Write an email", "Write a letter", "Write a dialogue",
    "Write a Python function", "Write a JavaScript", "Write a SQL query", "What does this code do?",
    "Fix the bug in this code:", "def ", "Calculate", "Solve", "What is 17 *", "If a train", "A store sells",
    "How many", "Convert", "Summarize the following text:", "Summarize this article:", "Rewrite the following paragraph",
    "Rewrite this sentence", "Fix the grammar:", "Translate", "Make this more formal:", "Here is", "Read the passage",
    "Classify", "Brainstorm", "Imagine", "Pretend you are", "As a teacher,", "Hi!", "Hey,", "Quick question:",
)


def pre_query_text(tokenizer) -> str:
    """The chat template rendered up to where the user's message starts (the system prompt included)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("self-instruct requests need a chat model: this tokenizer has no chat template")
    marker = "\u2063REQUEST\u2063"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                             add_generation_prompt=False)
    if rendered.count(marker) != 1:
        raise ValueError("could not find where the user's message starts in this tokenizer's chat template")
    return rendered.split(marker)[0]


_WORD = re.compile(r"[A-Za-z]+")


def clean_request(text: str, *, min_words: int = 3, max_words: int = 160, min_ascii: float = 0.95) -> str | None:
    """The request, stripped, or None when it is too short, too long or mostly not plain text."""
    text = text.strip()
    words = text.split()
    if not min_words <= len(words) <= max_words:
        return None
    if sum(ch.isascii() for ch in text) < min_ascii * len(text) or len(_WORD.findall(text)) < min_words:
        return None
    return text


def _key(text: str) -> str:
    return " ".join(text.lower().split())[:80]


@torch.no_grad()
def write_requests(model, tokenizer, count: int, *, starters=STARTERS, temperature: float = 0.9, top_p: float = 0.98,
                   max_new_tokens: int = 96, batch_size: int = 64, seed: int = 0, exclude=(), require_finished: bool = True,
                   progress: bool = True, **clean) -> list[dict]:
    """``count`` distinct user requests sampled from ``model`` after the pre-query text plus a random starter.

    Returns [{"request": text, "starter": starter}]. A sample is kept only if the model ended the message itself
    (``require_finished``), ``clean_request`` accepts it, and it is new (case and spacing ignored; ``exclude``
    lists texts that must never appear, such as evaluation prompts).
    """
    from tqdm.auto import tqdm

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 0 < temperature:
        raise ValueError(f"temperature must be positive, got {temperature}")
    pre = pre_query_text(tokenizer)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rng = random.Random(seed)
    torch.manual_seed(seed)
    seen = {_key(t) for t in exclude}
    out: list[dict] = []
    bar = tqdm(total=count, desc="requests", disable=not progress)
    rounds = 0
    while len(out) < count:
        rounds += 1
        if rounds > 20 + 5 * count // batch_size:
            raise RuntimeError(f"only {len(out)} of {count} requests passed the filters; the model rarely ends its "
                               "messages or repeats itself (lower the temperature or relax the filters)")
        picks = [rng.choice(starters) for _ in range(batch_size)]
        encoded = [tokenizer(pre + s, add_special_tokens=False)["input_ids"] for s in picks]
        ids, mask = left_padded(encoded, pad)
        width = ids.shape[1]
        generated = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), do_sample=True,
                                   temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                                   eos_token_id=eos, pad_token_id=pad)[:, width:].cpu()
        for starter, row in zip(picks, generated.tolist()):
            finished = eos in row
            row = row[: row.index(eos)] if finished else row
            if require_finished and not finished:
                continue
            continuation = tokenizer.decode(row, skip_special_tokens=True)
            text = clean_request((starter + continuation) if starter else continuation, **clean)
            if text is None or _key(text) in seen:
                continue
            seen.add(_key(text))
            out.append({"request": text, "starter": starter})
            bar.update(1)
            if len(out) == count:
                break
    bar.close()
    return out
