"""The target's own answers, kept compact so that every run adds to them instead of writing them again.

A CPU writes a few hundred answer tokens per second, so the answers drafts learn from are worth keeping: only token
ids (uint16: the vocabulary has fewer than 65,536 tokens), in one compressed file, one row of bookkeeping per answer.
Features and labels are recomputed from the ids by one batched target pass when a draft trains.

    python -m specdec_course.distill answers --prompts 200     # answer 200 more requests, appended after each batch
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

PACKAGE = Path(__file__).resolve().parent
ANSWERS_FILE = PACKAGE / "data" / "target_answers.npz"
REQUESTS_FILE = PACKAGE / "data" / "self_instruct_requests.json"


def load_answers(path: Path | str = ANSWERS_FILE) -> dict:
    """{"sequences": [int64 tensors: prompt + answer], "prompt_lengths": [...], "request_index": [...], "meta": {...}};
    empty lists when the file does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return {"sequences": [], "prompt_lengths": [], "request_index": [], "meta": {"seconds": 0.0}}
    with np.load(path) as data:
        tokens, lengths = data["tokens"].astype(np.int64), data["lengths"]
        ends = np.cumsum(lengths)
        sequences = [torch.from_numpy(tokens[e - n:e]) for e, n in zip(ends, lengths)]
        return {"sequences": sequences, "prompt_lengths": data["prompt_lengths"].tolist(),
                "request_index": data["request_index"].tolist(), "meta": json.loads(str(data["meta"]))}


def save_answers(answers: dict, path: Path | str = ANSWERS_FILE) -> Path:
    """Write ``answers`` (as ``load_answers`` returns) atomically: a crash never leaves half a file."""
    path = Path(path)
    sequences = answers["sequences"]
    if any(int(s.max()) >= 2 ** 16 or int(s.min()) < 0 for s in sequences if len(s)):
        raise ValueError("token ids must lie in 0 … 65535 to be stored as uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".writing.npz")
    np.savez_compressed(
        temporary, tokens=np.concatenate([s.numpy() for s in sequences]).astype(np.uint16) if sequences else np.zeros(0, np.uint16),
        lengths=np.array([len(s) for s in sequences], dtype=np.int32),
        prompt_lengths=np.array(answers["prompt_lengths"], dtype=np.int32),
        request_index=np.array(answers["request_index"], dtype=np.int32), meta=np.array(json.dumps(answers["meta"])))
    os.replace(temporary, path)
    return path


@torch.no_grad()
def answer_requests(target, tokenizer, count: int, *, path: Path | str = ANSWERS_FILE,
                    requests_file: Path | str = REQUESTS_FILE, max_new_tokens: int = 128, batch_size: int = 32,
                    writer=None, progress: bool = True) -> dict:
    """The target's greedy answers to the next ``count`` requests of ``requests_file`` that ``path`` does not hold yet,
    appended to ``path`` after every batch (stop at any time: what is written stays). ``writer``: another copy of the
    target that writes (say bfloat16 on a CPU with bf16 units)."""
    from tqdm.auto import tqdm

    from .generation import left_padded
    from .models import chat_prompt

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    requests = [r["request"] for r in json.loads(Path(requests_file).read_text())["requests"]]
    answers = load_answers(path)
    meta = answers["meta"]
    if meta.get("requests_file") not in (None, Path(requests_file).name):
        raise ValueError(f"{path} holds answers to {meta['requests_file']}, not {Path(requests_file).name}: "
                         "give another --answers file")
    done = set(answers["request_index"])
    todo = [i for i in range(len(requests)) if i not in done][:count]
    if not todo:
        print(f"every request of {requests_file} is answered in {path}")
        return answers
    writer = writer or target
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = {i: chat_prompt(tokenizer, requests[i])[0] for i in todo}
    todo.sort(key=lambda i: len(prompts[i]))  # similar lengths batch together
    meta.update(requests_file=Path(requests_file).name, max_new_tokens=max_new_tokens, decoding="greedy",
                writer_dtype=str(writer.dtype), about="the target's greedy answers (prompt + answer token ids)")
    for start in tqdm(range(0, len(todo), batch_size), desc="target answers", disable=not progress):
        began = time.perf_counter()
        batch = todo[start:start + batch_size]
        ids, mask = left_padded([prompts[i] for i in batch], pad)
        generated = writer.generate(ids.to(writer.device), attention_mask=mask.to(writer.device), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
        for row, i in enumerate(batch):
            answer = generated[row, ids.shape[1]:].cpu()
            stop = (answer == eos).nonzero()
            answer = answer[: int(stop[0]) + 1] if len(stop) else answer
            answers["sequences"].append(torch.cat([prompts[i], answer]).long())
            answers["prompt_lengths"].append(len(prompts[i]))
            answers["request_index"].append(i)
        meta["seconds"] = round(meta.get("seconds", 0.0) + time.perf_counter() - began, 1)
        save_answers(answers, path)
    return answers
