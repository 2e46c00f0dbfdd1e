"""Autoregressive generation: the baseline every speedup in the course is measured against.

One token per forward pass: y_t = argmax_y Pr_p(y | x, y_<t)  (greedy), or a sample from
softmax(logits / temperature).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .perf import clock


@dataclass
class GenerationResult:
    """What a generation produced: the new token ids, their text and how long each took."""

    tokens: list[int]
    text: str | None
    token_times: list[float] = field(repr=False)  # seconds for each new token (the first includes the prompt pass)
    prompt_length: int = 0

    @property
    def total_time(self) -> float:
        return float(sum(self.token_times))

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.total_time if self.total_time > 0 else float("nan")

    def __len__(self) -> int:
        return len(self.tokens)


# --------------------------------------------------------------------------- input checks shared by all generators
def check_max_new_tokens(max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be a whole number (0 or more), got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
    return max_new_tokens


def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number (0 for greedy, > 0 to sample), got {temperature!r}")
    if temperature < 0 or temperature != temperature:
        raise ValueError(f"temperature must be 0 (greedy) or positive (sampling), got {temperature}")
    return float(temperature)


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def as_input_ids(input_ids, model, max_new_tokens: int = 0) -> torch.Tensor:
    """The prompt as a LongTensor of shape (1, n) on the model's device, after checking it."""
    if isinstance(input_ids, dict) or hasattr(input_ids, "input_ids"):
        input_ids = input_ids["input_ids"]
    if isinstance(input_ids, (list, tuple)):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in input_ids):
            raise TypeError("input_ids given as a list must hold integer token ids")
        input_ids = torch.tensor([list(input_ids)], dtype=torch.long)
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a tensor or a list of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (n,) or (1, n), got {tuple(input_ids.shape)}")
    if input_ids.shape[0] != 1:
        raise ValueError(f"only one sequence at a time is supported (batch size 1), got a batch of {input_ids.shape[0]}")
    n = input_ids.shape[1]
    if n == 0:
        raise ValueError("the prompt is empty: input_ids must hold at least one token")
    vocab = model.config.vocab_size
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise ValueError(f"input_ids must be token ids in [0, {vocab - 1}] for this model")
    limit = context_length(model)
    if limit is not None and n + max_new_tokens > limit:
        raise ValueError(
            f"the prompt has {n} tokens and {max_new_tokens} new ones were asked for, {n + max_new_tokens} in all, "
            f"but the model's context holds at most {limit}; shorten the prompt or ask for fewer tokens"
        )
    return input_ids.to(device=model.device, dtype=torch.long)


def left_padded(sequences, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (input_ids, attention_mask) from token lists of different lengths, padded on the left, so that
    every row's continuation starts at the same column when the batch is generated together."""
    rows = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sequences]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def decode(tokenizer, tokens: list[int]) -> str | None:
    return tokenizer.decode(tokens, skip_special_tokens=True) if tokenizer is not None else None


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def pick_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """argmax of the logits (temperature 0), else a sample from softmax(logits / temperature)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def make_generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


# --------------------------------------------------------------------------- the baseline
@torch.no_grad()
def autoregressive_generate(model, input_ids, max_new_tokens: int, *, temperature: float = 0.0, seed: int | None = None,
                            use_cache: bool = True, eos_token_id: int | None = None, tokenizer=None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` tokens one at a time.

    Greedy (temperature 0): y_t = argmax_y Pr_p(y | x, y_<t); equals ``model.generate(do_sample=False)``.
    With ``use_cache`` the prompt is processed once and each step feeds only the newest token;
    without it every step re-reads the whole sequence. Stops after ``eos_token_id`` if given.
    """
    from transformers import DynamicCache

    max_new_tokens = check_max_new_tokens(max_new_tokens)
    temperature = check_temperature(temperature)
    ids = as_input_ids(input_ids, model, max_new_tokens)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    generator = make_generator(seed)

    tokens: list[int] = []
    times: list[float] = []
    cache = DynamicCache(config=model.config) if use_cache else None
    next_input = ids
    for _ in range(max_new_tokens):
        start = clock.now()
        if use_cache:
            logits = model(next_input, past_key_values=cache, use_cache=True).logits[0, -1]
        else:
            logits = model(next_input, use_cache=False).logits[0, -1]
        token = pick_token(logits, temperature, generator)
        sync(ids.device)
        times.append(clock.now() - start)
        tokens.append(token)
        if eos_token_id is not None and token == eos_token_id:
            break
        new = torch.tensor([[token]], device=ids.device)
        next_input = new if use_cache else torch.cat([next_input, new], dim=1)
    return GenerationResult(tokens=tokens, text=decode(tokenizer, tokens), token_times=times, prompt_length=ids.shape[1])


@torch.no_grad()
def mismatch_margin(model, prompt_ids, expected: list[int], got: list[int]):
    """Where two greedy outputs first differ: (position, the model's top-2 logit margin there), else (None, None).

    A tiny margin means a near tie, where a pass over k tokens may round the other way than k one-token passes;
    a large one means a real bug. A length difference counts as a difference at the shorter one's end.
    """
    for i, (a, b) in enumerate(zip(expected + [None], got + [None])):
        if a != b:
            context = torch.cat([prompt_ids.reshape(1, -1).cpu(), torch.tensor([expected[:i]], dtype=torch.long)], dim=1)
            top2 = model(context.to(model.device)).logits[0, -1].float().topk(2).values
            return i, float(top2[0] - top2[1])
    return None, None


# --------------------------------------------------------------------------- the cost of one forward pass
@torch.no_grad()
def forward_time(model, prefix_length: int, k: int, *, repeats: int = 5, seed: int = 0) -> float:
    """Median seconds of ONE cached forward pass that processes ``k`` new tokens after a ``prefix_length`` prefix."""
    from .cache import new_cache

    if k < 1 or prefix_length < 1:
        raise ValueError("k and prefix_length must be at least 1")
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prefix = torch.randint(0, vocab, (1, prefix_length), generator=gen).to(model.device)
    cache = new_cache(model, "dynamic", prefix_length + k)  # (a model with a cache of its own gets that one)
    model(prefix, past_key_values=cache, use_cache=True)
    new = torch.randint(0, vocab, (1, k), generator=gen).to(model.device)
    model(new, past_key_values=cache, use_cache=True)  # warm-up
    cache.crop(-k)
    times = []
    for _ in range(repeats):
        sync(model.device)
        start = clock.now()
        model(new, past_key_values=cache, use_cache=True)
        sync(model.device)
        times.append(clock.now() - start)
        cache.crop(-k)  # forget the k tokens again: every repeat sees the same prefix
    return sorted(times)[len(times) // 2]
