"""Train the draft model by distillation from the target.

    python -m specdec_course.distill               # data + train + model card (the shipped draft)
    python -m specdec_course.distill data          # only: target greedy continuations of the train prompts
    python -m specdec_course.distill train         # only: train the draft on a data file made before

On the course's 2-core CPU the defaults take about 1 h 35 min (measured rates: the target answers 32 prompts
in 55 s at batch 32, and a training step of 8 sequences takes 1.9 s); on a CUDA GPU they use more data
(5 answers per prompt) and bigger batches, in about 8 minutes on an H100.

The draft is a plain ``LlamaForCausalLM`` with the target's vocabulary and tokenizer, so it loads with
``from_pretrained`` and works with transformers' own assisted generation. Its embedding (tied with its
output layer) starts as the target's embedding projected on its top principal directions:
E_draft = E_target · V[:, :d]. It is trained to predict the target's argmax next token at every position
of the target's own greedy answers to the train prompts (hard-label distillation), the quantity that greedy
acceptance α measures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from .generation import sync
from .models import get_device

PACKAGE = Path(__file__).resolve().parent
PROMPTS_FILE = PACKAGE / "data" / "prompts.json"
DRAFT_DIR = PACKAGE / "draft"  # the shipped draft
DEFAULT_DATA = Path("build") / "distill_data.pt"
DEFAULT_OUT = Path("build") / "draft"


def load_prompts(split: str = "train", path: Path | str = PROMPTS_FILE) -> list[str]:
    """The project's prompt set: split 'train' (distillation) or 'heldout' (never trained on)."""
    data = json.loads(Path(path).read_text())
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return list(data[split])


# --------------------------------------------------------------------------- the draft's shape
def draft_config(target_config, *, hidden_size: int = 256, num_layers: int = 2, num_heads: int = 4,
                 num_kv_heads: int = 2, intermediate_size: int | None = None):
    """A small Llama config that shares the target's vocabulary, special tokens and RoPE."""
    from transformers import LlamaConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
    rope = getattr(target_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0}
    return LlamaConfig(
        vocab_size=target_config.vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size or 3 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=target_config.max_position_embeddings, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=target_config.bos_token_id, eos_token_id=target_config.eos_token_id,
        pad_token_id=target_config.pad_token_id, rope_parameters=dict(rope),
    )


def projected_embedding(target, hidden_size: int) -> torch.Tensor:
    """The target's token embedding projected on its top ``hidden_size`` principal directions (vocab × hidden)."""
    emb = target.get_input_embeddings().weight.detach().float().cpu()
    _, _, v = torch.linalg.svd(emb - emb.mean(0), full_matrices=False)
    projected = emb @ v[:hidden_size].T
    return projected / projected.std() * 0.02 * math.sqrt(hidden_size / 64)


# --------------------------------------------------------------------------- data
@torch.no_grad()
def make_data(target, prompts: list[torch.Tensor], *, eos_token_id: int, pad_token_id: int | None = None,
              max_new_tokens: int = 192, batch_size: int = 16, temperature: float = 0.0, seed: int = 0,
              progress: bool = True) -> dict:
    """Target continuations of tokenized ``prompts`` (greedy, or sampled at ``temperature`` for more varied
    text), with the target's argmax next token at every position.

    Returns {"tokens": list of int tensors, "labels": same shapes, "prompt_lengths": [...]}, where
    labels[i] = argmax_y Pr_target(y | tokens[: i + 1]).
    """
    from tqdm.auto import tqdm

    device = target.device
    pad = eos_token_id if pad_token_id is None else pad_token_id
    out = {"tokens": [], "labels": [], "prompt_lengths": []}
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    for start in tqdm(range(0, len(prompts), batch_size), desc="target answers", disable=not progress):
        batch = [p.reshape(-1).cpu() for p in prompts[start:start + batch_size]]
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, b in enumerate(batch):  # left padding, so every answer starts at the same column
            ids[row, width - len(b):] = b
            mask[row, width - len(b):] = 1
        generated = target.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                    pad_token_id=pad, eos_token_id=eos_token_id, **sampling)
        for row, b in enumerate(batch):
            answer = generated[row, width:].cpu()
            eos = (answer == eos_token_id).nonzero()
            answer = answer[: int(eos[0]) + 1] if len(eos) else answer
            sequence = torch.cat([b, answer])
            logits = target(sequence.unsqueeze(0).to(device)).logits[0]
            out["tokens"].append(sequence.to(torch.int32))
            out["labels"].append(logits.argmax(-1).cpu().to(torch.int32))
            out["prompt_lengths"].append(len(b))
    return out


# --------------------------------------------------------------------------- training
def train_draft(data: dict, config, *, steps: int = 3000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                device=None, init_embedding: torch.Tensor | None = None, prompt_weight: float = 0.1,
                progress: bool = True, log_every: int = 100) -> tuple:
    """Train a fresh draft on (tokens, labels) with cross-entropy on the target's argmax labels.

    Answer positions weigh 1, prompt positions ``prompt_weight`` (the draft mostly runs on answers).
    Returns (model, history) where history lists (step, loss, label accuracy).
    """
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    device = get_device(device)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if init_embedding is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(init_embedding)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    sequences, labels, prompt_lengths = data["tokens"], data["labels"], data["prompt_lengths"]
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    history = []
    bar = tqdm(range(steps), desc="training draft", disable=not progress)
    for step in bar:
        picks = torch.randint(0, len(sequences), (batch_size,), generator=generator).tolist()
        width = max(len(sequences[i]) for i in picks)
        ids = torch.zeros(batch_size, width, dtype=torch.long)
        target = torch.full((batch_size, width), -100, dtype=torch.long)
        weight = torch.zeros(batch_size, width)
        for row, i in enumerate(picks):
            n = len(sequences[i])
            ids[row, :n] = sequences[i].long()
            target[row, :n] = labels[i].long()
            weight[row, :n] = prompt_weight
            weight[row, prompt_lengths[i] - 1:n] = 1.0
        ids, target, weight = ids.to(device), target.to(device), weight.to(device)
        with autocast:
            logits = model(ids).logits
        losses = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100,
                                                   reduction="none")
        loss = (losses * weight.flatten()).sum() / weight.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            answer = weight == 1.0
            accuracy = (logits.argmax(-1) == target)[answer].float().mean().item()
            history.append((step, loss.item(), accuracy))
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
    return model.eval(), history


@torch.no_grad()
def label_accuracy(model, data: dict, *, answers_only: bool = True) -> float:
    """Fraction of positions where the draft's argmax equals the target's argmax label (teacher-forced)."""
    hits = total = 0
    for seq, lab, plen in zip(data["tokens"], data["labels"], data["prompt_lengths"]):
        logits = model(seq.long().unsqueeze(0).to(model.device)).logits[0].argmax(-1).cpu()
        keep = slice(plen - 1, len(seq) - 1) if answers_only else slice(0, len(seq) - 1)
        hits += int((logits[keep] == lab[keep].long()).sum())
        total += len(range(*keep.indices(len(seq))))
    return hits / max(total, 1)


def save_draft(model, folder: Path | str, *, dtype=torch.float16, max_shard_size: str = "12MB") -> None:
    """Save the draft as safetensors in ``dtype`` (it is loaded back as float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    model.to(dtype).save_pretrained(folder, max_shard_size=max_shard_size)
    model.float()


def model_card(info: dict, measured: str = "") -> str:
    """A short model card from the facts in training.json (and measured acceptance, if given)."""
    return f"""# specdec-course draft for SmolLM2-135M-Instruct

A small `LlamaForCausalLM` that proposes tokens for SmolLM2-135M-Instruct in speculative decoding.
It uses SmolLM2's tokenizer (vocabulary {info.get('vocab_size', 49152)}); load it with
`specdec_course.load_draft()` or `AutoModelForCausalLM.from_pretrained(folder)`.

| | |
|---|---|
| architecture | Llama, {info['layers']} layers, hidden {info['hidden']}, {info['heads']} heads, tied embedding/output |
| parameters | {info['parameters'] / 1e6:.1f} M (stored as float16, loaded as float32) |
| initialisation | embedding = the target's embedding projected on its top {info['hidden']} principal directions |
| training data | target answers to {info['data_prompts']} train prompts of `specdec_course/data/prompts.json`: {info['data_answers']} answers ({info.get('data_samples', 1)} per prompt: 1 greedy, the rest sampled), {info['data_tokens']} tokens; made in {info['data_seconds']:.0f} s on {info['data_device']} |
| objective | cross-entropy on the target's argmax next token at every position (answers weight 1, prompts 0.1) |
| training | {info['steps']} steps, batch {info['train_batch']}, AdamW lr {info['lr']} cosine, seed {info['seed']}: {info['train_seconds']:.0f} s on {info['train_device']} |
| final batch accuracy | {info['final_batch_accuracy']:.3f} (loss {info['final_loss']:.3f}) |
{measured}
Rebuild: `python -m specdec_course.distill` (see `--help`). Measure: `python -m specdec_course acceptance`.
"""


# --------------------------------------------------------------------------- the command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specdec_course.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "data", "train"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the data file written by 'data', read by 'train'")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where the draft's weights and card go (default build/draft; {DRAFT_DIR} holds the shipped one)")
    parser.add_argument("--prompts", type=int, default=None, help="use only the first N prompts of the split")
    parser.add_argument("--split", default="train", choices=["train", "heldout"], help="which prompts 'data' answers")
    parser.add_argument("--sample-temperatures", type=float, nargs="*", default=None,
                        help="after the greedy answer, one more sampled answer per prompt at each of these temperatures "
                             "(the labels stay the target's argmax); default 0.8 0.8 1.0 1.0 on a GPU, 0.8 on a CPU "
                             "(to stay within about two hours on 2 cores)")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per target generation batch (default 128 on a GPU, 32 on a CPU)")
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--train-batch", type=int, default=None,
                        help="sequences per training step (default 64 on a GPU, 8 on a CPU)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    for name in ("prompts", "max_new_tokens", "batch_size", "hidden", "layers", "steps", "train_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    device = get_device(args.device, verbose=True)
    on_gpu = device.type == "cuda"
    if args.sample_temperatures is None:
        args.sample_temperatures = [0.8, 0.8, 1.0, 1.0] if on_gpu else [0.8]
    if args.batch_size is None:
        args.batch_size = 128 if on_gpu else 32
    if args.train_batch is None:
        args.train_batch = 64 if on_gpu else 8
    if any(t <= 0 for t in args.sample_temperatures):
        parser.error("--sample-temperatures must all be positive")
    if args.stage in ("all", "data"):
        from .models import chat_prompt, load_target

        target, tokenizer = load_target(device=device)
        prompts = load_prompts(args.split)[: args.prompts]
        prompt_ids = [chat_prompt(tokenizer, p)[0] for p in prompts]
        start = time.perf_counter()
        data = {"tokens": [], "labels": [], "prompt_lengths": []}
        for sample, temperature in enumerate([0.0] + list(args.sample_temperatures)):
            more = make_data(target, prompt_ids, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=temperature,
                             seed=args.seed + sample)
            for key in data:
                data[key] += more[key]
        data["meta"] = {"prompts": len(prompts), "split": args.split, "samples": 1 + len(args.sample_temperatures),
                        "sample_temperatures": list(args.sample_temperatures), "max_new_tokens": args.max_new_tokens,
                        "seconds": time.perf_counter() - start,
                        "device": str(device), "embedding": projected_embedding(target, args.hidden).half(),
                        "target_config": target.config.to_dict()}
        args.data.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, args.data)
        n_tokens = sum(len(t) for t in data["tokens"])
        print(f"wrote {args.data}: {len(data['tokens'])} answers to {len(prompts)} {args.split} prompts, {n_tokens} tokens, "
              f"in {data['meta']['seconds']:.0f} s on {device}")
    if args.stage in ("all", "train"):
        from transformers import LlamaConfig

        if not args.data.is_file():
            parser.error(f"{args.data} does not exist: run `python -m specdec_course.distill data` first")
        data = torch.load(args.data, weights_only=False)
        meta = data["meta"]
        config = draft_config(LlamaConfig.from_dict(meta["target_config"]), hidden_size=args.hidden, num_layers=args.layers,
                              num_heads=args.heads, num_kv_heads=max(1, args.heads // 2))
        init = meta["embedding"].float()
        if init.shape[1] != args.hidden:
            parser.error(f"the data file holds a {init.shape[1]}-wide embedding; run 'data' again with --hidden {args.hidden}")
        start = time.perf_counter()
        model, history = train_draft(data, config, steps=args.steps, batch_size=args.train_batch, lr=args.lr,
                                     seed=args.seed, device=device, init_embedding=init)
        sync(device)
        seconds = time.perf_counter() - start
        save_draft(model, args.out)
        info = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "steps": args.steps,
                "train_batch": args.train_batch, "lr": args.lr, "seed": args.seed,
                "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(seconds, 1),
                "train_device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores",
                "data_prompts": meta["prompts"], "data_samples": meta.get("samples", 1), "data_answers": len(data["tokens"]),
                "data_tokens": sum(len(t) for t in data["tokens"]),
                "data_seconds": round(meta["seconds"], 1), "data_device": meta["device"],
                "final_loss": history[-1][1], "final_batch_accuracy": history[-1][2], "history": history}
        (Path(args.out) / "training.json").write_text(json.dumps(info, indent=1))
        (Path(args.out) / "README.md").write_text(model_card(info))
        print(f"trained in {seconds:.0f} s on {info['train_device']}; wrote {args.out}")
        print(f"measure it: python -m specdec_course acceptance --draft {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
