"""Train the draft model by distillation from the target.

    python -m specdec_course.distill               # requests + data + train + model card (the shipped draft's recipe)
    python -m specdec_course.distill requests      # only: the target writes user requests (self_instruct.py)
    python -m specdec_course.distill data --requests build/requests.json   # only: the target answers them
    python -m specdec_course.distill train         # only: train the draft on a data file made before
    python -m specdec_course.distill export        # the draft as a plain LlamaForCausalLM for transformers
    python -m specdec_course.distill answers --prompts 200   # the target answers 200 more requests (kept compact)
    python -m specdec_course.distill head          # train a feature head on those answers (drafters/feature_head.py)

The default design ("sliced", draft_model.py) starts the draft from the target itself: the target's token
embedding (shared, not stored), its first ``--layers`` layers and final norm, and an output layer over the
``--vocab-subset`` tokens the target produces most often. "fresh" trains a small Llama from scratch instead.
Training predicts the target's argmax next token at every position of the target's own greedy answers
(hard-label distillation), the quantity that greedy acceptance α measures. Nothing is downloaded: the
requests are written by the target (self-instruct), so the data looks like what people ask, not like a
few templates.
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

from .generation import left_padded, sync
from .models import get_device

PACKAGE = Path(__file__).resolve().parent
PROMPTS_FILE = PACKAGE / "data" / "prompts.json"
DRAFT_DIR = PACKAGE / "draft"  # the shipped draft
DEFAULT_DATA = Path("build") / "distill_data.pt"
DEFAULT_OUT = Path("build") / "draft"
DEFAULT_REQUESTS = Path("build") / "requests.json"
REQUESTS_FILE = PACKAGE / "data" / "self_instruct_requests.json"  # the requests the shipped draft learned from
SPLITS = ("train", "heldout", "eval", "rewrite")


def load_prompts(split: str = "train", path: Path | str = PROMPTS_FILE) -> list[str]:
    """The project's prompt set: split 'train' (the old templated training prompts), 'heldout' (written from the
    same templates, never trained on), 'eval' (written independently of any training data, never trained on) or
    'rewrite' (written independently: answers that reuse text from the prompt, as summaries and rewrites do)."""
    data = json.loads(Path(path).read_text())
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
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
def target_labels(target, sequences: list[torch.Tensor], *, batch_size: int = 16) -> list[torch.Tensor]:
    """argmax_y Pr_target(y | sequence[: i + 1]) at every position i of each sequence (batched, right-padded:
    causal attention means padding after a sequence never changes its logits)."""
    labels = []
    for start in range(0, len(sequences), batch_size):
        batch = [s.long() for s in sequences[start:start + batch_size]]
        width = max(len(s) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(batch):
            ids[row, :len(s)] = s
            mask[row, :len(s)] = 1
        argmax = target(ids.to(target.device), attention_mask=mask.to(target.device)).logits.argmax(-1).cpu()
        labels += [argmax[row, :len(s)].to(torch.int32) for row, s in enumerate(batch)]
    return labels


@torch.no_grad()
def make_data(target, prompts: list[torch.Tensor], *, eos_token_id: int, pad_token_id: int | None = None,
              max_new_tokens: int = 192, batch_size: int = 16, temperature: float = 0.0, seed: int = 0,
              generate_with=None, progress: bool = True) -> dict:
    """Target continuations of tokenized ``prompts`` (greedy, or sampled at ``temperature`` for more varied
    text), with the target's argmax next token at every position.

    ``generate_with``: another copy of the target to write the answers with (say a bfloat16 one, faster on a
    CPU that has bf16 units); the labels always come from ``target`` itself.
    Returns {"tokens": list of int tensors, "labels": same shapes, "prompt_lengths": [...]}, where
    labels[i] = argmax_y Pr_target(y | tokens[: i + 1]).
    """
    from tqdm.auto import tqdm

    writer = target if generate_with is None else generate_with
    device = writer.device
    pad = eos_token_id if pad_token_id is None else pad_token_id
    out = {"tokens": [], "labels": [], "prompt_lengths": []}
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    for start in tqdm(range(0, len(prompts), batch_size), desc="target answers", disable=not progress):
        batch = [p.reshape(-1).cpu() for p in prompts[start:start + batch_size]]
        ids, mask = left_padded(batch, pad)
        width = ids.shape[1]
        generated = writer.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                    pad_token_id=pad, eos_token_id=eos_token_id, **sampling)
        sequences = []
        for row, b in enumerate(batch):
            answer = generated[row, width:].cpu()
            eos = (answer == eos_token_id).nonzero()
            answer = answer[: int(eos[0]) + 1] if len(eos) else answer
            sequences.append(torch.cat([b, answer]).to(torch.int32))
            out["prompt_lengths"].append(len(b))
        out["tokens"] += sequences
        out["labels"] += target_labels(target, sequences)
    return out


# --------------------------------------------------------------------------- training
def train_draft(data: dict, config=None, *, model=None, steps: int = 3000, batch_size: int = 32, lr: float = 3e-3,
                seed: int = 0, device=None, init_embedding: torch.Tensor | None = None, prompt_weight: float = 0.1,
                max_length: int | None = None, bf16: bool | None = None, progress: bool = True,
                log_every: int = 100) -> tuple:
    """Train a draft on (tokens, labels) with cross-entropy on the target's argmax labels.

    A fresh LlamaForCausalLM from ``config``, or ``model`` itself (say a target-sliced draft; its frozen
    parameters stay frozen). With a SubsetHead the loss is over the subset's logits, and labels outside the
    subset are left out (the draft cannot propose them). Answer positions weigh 1, prompt positions
    ``prompt_weight`` (the draft mostly runs on answers). ``max_length`` crops long sequences at a random start.
    Returns (model, history) where history lists (step, loss, label accuracy).
    """
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from .draft_model import SubsetHead

    if (config is None) == (model is None):
        raise ValueError("give either a config (train a fresh draft) or a model (train it further)")
    from .perf.kernels import kernel_path

    if model is not None and kernel_path(model) in ("onednn", "mixed"):  # its products read packed copies of the weights
        raise ValueError(f"this model runs on the pre-packed {kernel_path(model)!r} kernels, whose copies of the weights "
                         "training would never update: train it on 'stock' (sc.use_kernels(model, 'stock')), then switch "
                         "its kernels after training")
    device = get_device(device)
    torch.manual_seed(seed)
    if model is None:
        model = LlamaForCausalLM(config)
        if init_embedding is not None:
            with torch.no_grad():
                model.get_input_embeddings().weight.copy_(init_embedding)
    model.to(device).train()
    head = model.lm_head
    subset = isinstance(head, SubsetHead)
    if subset:  # target id -> position in the subset, -100 when the draft cannot propose it
        position = torch.full((head.vocab_size,), -100, dtype=torch.long)
        position[head.token_ids.cpu()] = torch.arange(len(head.token_ids))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    from .draft_model import warmup_cosine

    schedule = warmup_cosine(optimizer, steps)
    sequences, labels, prompt_lengths = data["tokens"], data["labels"], data["prompt_lengths"]
    generator = torch.Generator().manual_seed(seed)
    from .perf.kernels import bf16_supported

    # bf16 matrix products (fp32 weights and optimizer) where the hardware has bf16 units: about 1.5x faster on such a CPU
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_supported(device) if bf16 is None else bf16)
    history = []
    bar = tqdm(range(steps), desc="training draft", disable=not progress)
    for step in bar:
        picks = torch.randint(0, len(sequences), (batch_size,), generator=generator).tolist()
        spans = []
        for i in picks:
            n = len(sequences[i])
            first = 0
            if max_length is not None and n > max_length:
                first = int(torch.randint(0, n - max_length + 1, (1,), generator=generator))
            spans.append((first, min(n, first + (max_length or n))))
        width = max(b - a for a, b in spans)
        ids = torch.zeros(batch_size, width, dtype=torch.long)
        target = torch.full((batch_size, width), -100, dtype=torch.long)
        weight = torch.zeros(batch_size, width)
        for row, (i, (a, b)) in enumerate(zip(picks, spans)):
            ids[row, :b - a] = sequences[i][a:b].long()
            target[row, :b - a] = labels[i][a:b].long()
            weight[row, :b - a] = prompt_weight
            weight[row, max(prompt_lengths[i] - 1 - a, 0):b - a] = 1.0
        if subset:
            target = torch.where(target >= 0, position[target.clamp(min=0)], target)
            weight = weight * (target >= 0)
        ids, target, weight = ids.to(device), target.to(device), weight.to(device)
        with autocast:
            if subset:
                logits = head.subset_logits(model.model(ids).last_hidden_state)
            else:
                logits = model(ids).logits
        losses = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100,
                                                   reduction="none")
        loss = (losses * weight.flatten()).sum() / weight.sum().clamp(min=1e-9)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
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
    if info.get("design", "fresh") == "sliced":
        subset = info.get("vocab_subset")
        head = (f"the target's output rows for its {subset} most frequent answer tokens ({info['subset_coverage']:.1%} of the "
                "training answers' tokens); every other token gets logit -inf" if subset else "the target's own output layer")
        shape = (f"the target's token embedding (not stored: read from the target), its first {info['layers']} layers "
                 f"(width {info['hidden']}) and final norm, then distilled; output layer: {head}")
        load = ("load it with `specdec_course.load_draft()` (it shares the target's embedding); "
                "`python -m specdec_course.distill export` writes a plain `LlamaForCausalLM` for transformers")
        init = "the target's own weights (embedding, first layers, final norm, output rows)"
        stored = f"{info['parameters'] / 1e6:.1f} M stored (float16), plus the target's embedding at load time"
    else:
        shape = f"Llama, {info['layers']} layers, hidden {info['hidden']}, {info['heads']} heads, tied embedding/output"
        load = "load it with `specdec_course.load_draft()` or `AutoModelForCausalLM.from_pretrained(folder)`"
        init = f"embedding = the target's embedding projected on its top {info['hidden']} principal directions"
        stored = f"{info['parameters'] / 1e6:.1f} M (stored as float16, loaded as float32)"
    return f"""# specdec-course draft for SmolLM2-135M-Instruct

A small draft that proposes tokens for SmolLM2-135M-Instruct in speculative decoding, as target token ids
(SmolLM2's tokenizer, vocabulary {info.get('vocab_size', 49152)}); {load}.

| | |
|---|---|
| architecture | {shape} |
| parameters | {stored} |
| initialisation | {init} |
| training data | the target's greedy answers to {info['data_prompts']} prompts ({info.get('data_source', 'train split')}): {info['data_answers']} answers, {info['data_tokens']} tokens; made in {info['data_seconds']:.0f} s on {info['data_device']} |
| objective | cross-entropy on the target's argmax next token at every position (answers weight 1, prompts 0.1) |
| training | {info['steps']} steps, batch {info['train_batch']} (crops of {info.get('max_length') or 'all'} tokens), AdamW lr {info['lr']} cosine, seed {info['seed']}: {info['train_seconds']:.0f} s on {info['train_device']} |
| final batch accuracy | {info['final_batch_accuracy']:.3f} (loss {info['final_loss']:.3f}) |
{measured}
Rebuild: `python -m specdec_course.distill` (see `--help`). Measure: `python -m specdec_course acceptance`.
"""


# --------------------------------------------------------------------------- the command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specdec_course.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "requests", "data", "train", "export",
                                                                   "answers", "head"],
                        help="requests: the target writes user requests (self-instruct); data: the target answers "
                             "them (or a prompt split); train: the draft learns from the answers; export: write a "
                             "draft as a plain LlamaForCausalLM (to --out) that transformers loads without this package")
    parser.add_argument("--answers", type=Path, default=None,
                        help="answers/head: the compact answers file (default: the shipped specdec_course/data/target_answers.npz)")
    parser.add_argument("--draft", type=Path, default=None, help="export: the draft folder to export (default: the shipped one)")
    parser.add_argument("--requests", type=Path, default=None,
                        help=f"the requests file ('requests' writes it, default {DEFAULT_REQUESTS}; 'data' answers it "
                             "instead of --split when given)")
    parser.add_argument("--count", type=int, default=3000, help="how many requests 'requests' writes")
    parser.add_argument("--request-temperature", type=float, default=0.9)
    parser.add_argument("--generate-dtype", default=None,
                        help="dtype of the target copy that writes requests and answers (default bfloat16 where the hardware "
                             "has it, else float32); the labels always come from the float32 target")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the data file written by 'data', read by 'train'")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where the draft's weights and card go (default build/draft; {DRAFT_DIR} holds the shipped one)")
    parser.add_argument("--prompts", type=int, default=None,
                        help="data: use only the first N prompts of the split; answers: answer N more requests; "
                             "head: learn from the first N answers only")
    parser.add_argument("--split", default="train", choices=list(SPLITS), help="which prompts 'data' answers")
    parser.add_argument("--sample-temperatures", type=float, nargs="*", default=None,
                        help="after the greedy answer, one more sampled answer per prompt at each of these temperatures "
                             "(the labels stay the target's argmax); default 0.8 0.8 1.0 1.0 on a GPU, none on a CPU "
                             "(to stay within about two hours on 2 cores)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest answer 'data' asks of the target")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per target generation batch (default 128 on a GPU, 64 on a CPU)")
    parser.add_argument("--design", default="sliced", choices=["sliced", "fresh"],
                        help="sliced: the target's embedding and first --layers layers, output over the --vocab-subset "
                             "most frequent answer tokens, then distilled; fresh: a small Llama of width --hidden from scratch")
    parser.add_argument("--vocab-subset", type=int, default=8192,
                        help="sliced design: how many of the most frequent answer tokens the draft can propose (0: all)")
    parser.add_argument("--hidden", type=int, default=192, help="fresh design: width")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=3, help="fresh design: attention heads")
    parser.add_argument("--max-length", type=int, default=256, help="training crops longer sequences to this many tokens")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--train-batch", type=int, default=None,
                        help="sequences per training step (default 64 on a GPU, 16 on a CPU)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 sliced, 3e-3 fresh)")
    parser.add_argument("--depth", type=int, default=3, help="head: training-time test depth (draft positions trained)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0],
                        help="head: train once per fraction of the answers (α per depth against data size in the card)")
    parser.add_argument("--eval-prompts", type=int, default=8, help="head: eval-split prompts α per depth is measured on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    for name in ("count", "prompts", "max_new_tokens", "batch_size", "hidden", "layers", "steps", "train_batch", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.stage == "export":
        from .draft_model import export_plain
        from .models import load_draft

        if args.out == DEFAULT_OUT:
            args.out = Path("build") / "draft-plain"
        draft = load_draft(args.draft, kernels="stock", device="cpu")
        export_plain(draft, args.out)
        print(f"wrote {args.out}: load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r})")
        return 0
    if args.stage in ("answers", "head"):
        return _head_stages(args, parser)
    device = get_device(args.device, verbose=True)
    on_gpu = device.type == "cuda"
    if args.sample_temperatures is None:
        args.sample_temperatures = [0.8, 0.8, 1.0, 1.0] if on_gpu else []
    if args.batch_size is None:
        args.batch_size = 128 if on_gpu else 64
    if args.train_batch is None:
        args.train_batch = 64 if on_gpu else 16
    if args.lr is None:
        args.lr = 1e-3 if args.design == "sliced" else 3e-3
    if args.generate_dtype is None:
        from .perf.kernels import bf16_supported

        args.generate_dtype = "bfloat16" if bf16_supported(device) else "float32"
    if any(t <= 0 for t in args.sample_temperatures):
        parser.error("--sample-temperatures must all be positive")
    if args.stage == "data" and args.requests is None and args.split == "eval":
        parser.error("the eval split is never trained on: answer --split train, or a --requests file")
    writer = None
    if args.stage in ("all", "requests", "data"):
        from .models import load_target

        target, tokenizer = load_target(device=device)
        writer = target
        if args.generate_dtype not in ("float32", "torch.float32"):
            writer, _ = load_target(device=device, dtype=args.generate_dtype)
    if args.stage in ("all", "requests"):
        from .self_instruct import write_requests

        if not args.request_temperature > 0:
            parser.error(f"--request-temperature must be positive, got {args.request_temperature}")
        out = args.requests or DEFAULT_REQUESTS
        start = time.perf_counter()
        exclude = load_prompts("eval") + load_prompts("heldout")
        requests = write_requests(writer, tokenizer, args.count, temperature=args.request_temperature,
                                  batch_size=args.batch_size, seed=args.seed, exclude=exclude)
        seconds = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"about": "user requests written by the target itself (self-instruct)",
                                   "temperature": args.request_temperature, "seed": args.seed, "seconds": round(seconds, 1),
                                   "device": str(device), "dtype": str(writer.dtype), "requests": requests}, indent=1))
        print(f"wrote {out}: {len(requests)} requests in {seconds:.0f} s")
        if args.stage == "all":
            args.requests = out
    if args.stage in ("all", "data"):
        from .models import chat_prompt

        if args.requests is not None:
            if not args.requests.is_file():
                parser.error(f"{args.requests} does not exist: run `python -m specdec_course.distill requests` first")
            prompts = [r["request"] for r in json.loads(args.requests.read_text())["requests"]][: args.prompts]
            source = str(args.requests)
        else:
            prompts = load_prompts(args.split)[: args.prompts]
            source = f"{args.split} split"
        prompt_ids = [chat_prompt(tokenizer, p)[0] for p in prompts]
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # similar lengths batch together
        prompt_ids = [prompt_ids[i] for i in order]
        start = time.perf_counter()
        data = {"tokens": [], "labels": [], "prompt_lengths": []}
        for sample, temperature in enumerate([0.0] + list(args.sample_temperatures)):
            more = make_data(target, prompt_ids, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=temperature,
                             seed=args.seed + sample, generate_with=writer)
            for key in data:
                data[key] += more[key]
        data["meta"] = {"prompts": len(prompts), "split": source, "samples": 1 + len(args.sample_temperatures),
                        "sample_temperatures": list(args.sample_temperatures), "max_new_tokens": args.max_new_tokens,
                        "seconds": time.perf_counter() - start, "generate_dtype": str(writer.dtype),
                        "device": str(device), "embedding": projected_embedding(target, args.hidden).half(),
                        "target_config": target.config.to_dict()}
        args.data.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, args.data)
        n_tokens = sum(len(t) for t in data["tokens"])
        print(f"wrote {args.data}: {len(data['tokens'])} answers to {len(prompts)} prompts ({source}), {n_tokens} tokens, "
              f"in {data['meta']['seconds']:.0f} s on {device}")
    if args.stage in ("all", "train"):
        from transformers import LlamaConfig

        from .draft_model import frequent_tokens, save_sliced_draft, target_sliced_draft

        if not args.data.is_file():
            parser.error(f"{args.data} does not exist: run `python -m specdec_course.distill data` first")
        if args.vocab_subset < 0:
            parser.error(f"--vocab-subset must be 0 (all tokens) or positive, got {args.vocab_subset}")
        data = torch.load(args.data, weights_only=False)
        meta = data["meta"]
        info = {"design": args.design, "layers": args.layers}
        if args.design == "sliced":
            from .models import load_target

            target, tokenizer = load_target(device=device, kernels="stock")
            answers = [lab[plen - 1:] for lab, plen in zip(data["labels"], data["prompt_lengths"])]
            token_ids = None
            if args.vocab_subset:
                token_ids = frequent_tokens(answers, args.vocab_subset, always=[tokenizer.eos_token_id])
                covered = torch.isin(torch.cat(answers).long(), token_ids).float().mean().item()
                info.update(vocab_subset=len(token_ids), subset_coverage=round(covered, 4))
                print(f"the {len(token_ids)} most frequent answer tokens cover {covered:.1%} of the target's answer tokens")
            draft, config = target_sliced_draft(target, args.layers, token_ids), None
            info["hidden"] = target.config.hidden_size
        else:
            config = draft_config(LlamaConfig.from_dict(meta["target_config"]), hidden_size=args.hidden,
                                  num_layers=args.layers, num_heads=args.heads, num_kv_heads=max(1, args.heads // 2))
            init = meta["embedding"].float()
            if init.shape[1] != args.hidden:
                parser.error(f"the data file holds a {init.shape[1]}-wide embedding; run 'data' again with --hidden {args.hidden}")
            draft = None
            info.update(hidden=args.hidden, heads=args.heads)
        start = time.perf_counter()
        model, history = train_draft(data, config, model=draft, steps=args.steps, batch_size=args.train_batch, lr=args.lr,
                                     seed=args.seed, device=device, max_length=args.max_length,
                                     init_embedding=None if draft is not None else init)
        sync(device)
        seconds = time.perf_counter() - start
        if args.design == "sliced":
            save_sliced_draft(model, args.out)
            stored = [p for n, p in model.named_parameters() if not n.startswith("model.embed_tokens.")]
        else:
            save_draft(model, args.out)
            stored = list(model.parameters())
        info.update({"steps": args.steps, "train_batch": args.train_batch, "max_length": args.max_length, "lr": args.lr,
                     "seed": args.seed, "parameters": sum(p.numel() for p in stored), "train_seconds": round(seconds, 1),
                     "train_device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores",
                     "data_source": meta.get("split", "train split"), "data_prompts": meta["prompts"],
                     "data_samples": meta.get("samples", 1), "data_answers": len(data["tokens"]),
                     "data_tokens": sum(len(t) for t in data["tokens"]), "data_seconds": round(meta["seconds"], 1),
                     "data_device": meta["device"], "final_loss": history[-1][1], "final_batch_accuracy": history[-1][2],
                     "history": history})
        (Path(args.out) / "training.json").write_text(json.dumps(info, indent=1))
        (Path(args.out) / "README.md").write_text(model_card(info))
        print(f"trained in {seconds:.0f} s on {info['train_device']}; wrote {args.out}")
        print(f"measure it: python -m specdec_course acceptance --draft {args.out}")
    return 0


def _head_stages(args, parser) -> int:
    """answers: the target answers more requests, appended to the compact answers file; head: train a feature head."""
    from .answers import ANSWERS_FILE, REQUESTS_FILE as SHIPPED_REQUESTS, answer_requests
    from .models import load_target

    device = get_device(args.device, verbose=True)
    answers_file = args.answers or ANSWERS_FILE
    if args.stage == "answers":
        target, tokenizer = load_target(device=device)
        writer = target
        if args.generate_dtype not in (None, "float32", "torch.float32"):
            writer, _ = load_target(device=device, dtype=args.generate_dtype)
        answers = answer_requests(target, tokenizer, args.prompts or 100, path=answers_file,
                                  requests_file=args.requests or SHIPPED_REQUESTS, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size or 32, writer=writer)
        tokens = sum(len(s) - p for s, p in zip(answers["sequences"], answers["prompt_lengths"]))
        print(f"{answers_file}: {len(answers['sequences'])} answers, {tokens} answer tokens")
        return 0
    return _train_feature_head(args, parser, answers_file, device)


def depth_acceptance(target, drafter, tokenizer, prompts: list[str], *, tau: int = 4, max_new_tokens: int = 64,
                     max_depth: int = 4) -> tuple[list[float], float]:
    """α at each draft depth 1 … max_depth (of the steps that reached a depth, the share that accepted it), from greedy
    speculative runs on ``prompts``, and the overall α."""
    from .perf.cost_model import acceptance_profile, alpha_from_steps
    from .models import chat_prompt
    from .speculative import speculative_generate

    steps = []
    for prompt in prompts:
        steps += speculative_generate(target, drafter, chat_prompt(tokenizer, prompt), max_new_tokens, tau=tau,
                                      eos_token_id=tokenizer.eos_token_id).steps
    drafted = [s for s in steps if s.tau > 0]
    return acceptance_profile(drafted, max_depth, min_reached=1), alpha_from_steps(drafted)


def _train_feature_head(args, parser, answers_file: Path, device) -> int:
    """Train a feature head with training-time test on the compact answers, for each data fraction; measure α per
    depth on the eval split after each; keep the head trained on all of them, with its card."""
    from .answers import load_answers
    from .draft_model import frequent_tokens
    from .drafters.feature_head import FeatureHead, FeatureHeadDrafter, target_features, train_head
    from .models import load_target

    answers = load_answers(answers_file)
    if not answers["sequences"]:
        parser.error(f"{answers_file} holds no answers yet: run `python -m specdec_course.distill answers` first")
    for name in ("depth", "eval_prompts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not all(0 < f <= 1 for f in args.fractions):
        parser.error(f"--fractions must lie in (0, 1], got {args.fractions}")
    target, tokenizer = load_target(device=device)
    sequences, prompt_lengths = answers["sequences"][: args.prompts], answers["prompt_lengths"][: args.prompts]
    start = time.perf_counter()
    features, labels = target_features(target, sequences)
    feature_seconds = time.perf_counter() - start
    answer_labels = [lab[plen - 1:] for lab, plen in zip(labels, prompt_lengths)]
    token_ids = frequent_tokens(answer_labels, args.vocab_subset, always=[tokenizer.eos_token_id])
    coverage = torch.isin(torch.cat(answer_labels).long(), token_ids).float().mean().item()
    eval_prompts = load_prompts("eval")[: args.eval_prompts]
    lr = args.lr or 1e-3
    runs, head = [], None
    for fraction in sorted(set(args.fractions)):
        count = max(1, round(fraction * len(sequences)))  # the answers in the file's order: a fraction is a prefix
        head = FeatureHead.for_target(target, token_ids, seed=args.seed)
        began = time.perf_counter()
        history = train_head(head, features[:count], sequences[:count], labels[:count], prompt_lengths[:count],
                             steps=args.steps, batch_size=args.train_batch or 8, max_length=min(args.max_length, 128),
                             depth=args.depth, lr=lr, seed=args.seed, progress=True)
        seconds = time.perf_counter() - began
        profile, alpha = depth_acceptance(target, FeatureHeadDrafter(target, head), tokenizer, eval_prompts, tau=4)
        tokens = sum(len(s) - p for s, p in zip(sequences[:count], prompt_lengths[:count]))
        runs.append({"answers": count, "answer_tokens": tokens, "train_seconds": round(seconds, 1),
                     "alpha_by_depth": [round(a, 3) for a in profile], "alpha": round(alpha, 3),
                     "final_accuracy_by_depth": history[-1][2], "history": history})
        print(f"{count} answers ({tokens} answer tokens): α by depth {runs[-1]['alpha_by_depth']} on {len(eval_prompts)} eval prompts")
    out = args.out if args.out != DEFAULT_OUT else Path("build") / "head"
    head.save(out)
    info = {"answers_file": str(answers_file.name), "answers": len(sequences), "answers_in_file": len(answers["sequences"]), "vocab_subset": len(token_ids),
            "subset_coverage": round(coverage, 4), "depth": args.depth, "steps": args.steps,
            "train_batch": args.train_batch or 8, "max_length": min(args.max_length, 128), "lr": lr, "seed": args.seed,
            "parameters": sum(p.numel() for p in head.parameters()), "feature_seconds": round(feature_seconds, 1),
            "answers_seconds": answers["meta"].get("seconds"), "eval_prompts": len(eval_prompts), "eval_tau": 4,
            "device": f"{platform.machine()} CPU, {os.cpu_count()} cores" if device.type == "cpu" else torch.cuda.get_device_name(device),
            "runs": runs}
    (out / "training.json").write_text(json.dumps(info, indent=1))
    (out / "README.md").write_text(head_card(info))
    print(f"wrote {out}: load it with specdec_course.drafters.load_feature_head(target, {str(out)!r})")
    return 0


def head_card(info: dict) -> str:
    """The feature head's model card: its shape, data, and α per draft depth against the amount of data."""
    depths = max(len(r["alpha_by_depth"]) for r in info["runs"])
    rows = "\n".join(f"| {r['answers']} | {r['answer_tokens']} | "
                     + " | ".join(f"{a:.3f}" for a in r["alpha_by_depth"] + [float("nan")] * (depths - len(r["alpha_by_depth"])))
                     + f" | {r['alpha']:.3f} | {r['train_seconds']:.0f} s |" for r in info["runs"]).replace("nan", "–")
    header = "| answers | answer tokens | " + " | ".join(f"α depth {d}" for d in range(1, depths + 1)) + " | α | training |"
    rule = "|---" * (depths + 4) + "|"
    in_file = info.get("answers_in_file", info["answers"])
    answers = f"all {in_file}" if info["answers"] == in_file else f"the first {info['answers']} of the {in_file}"
    return f"""# specdec-course feature head for SmolLM2-135M-Instruct

A draft head over the target's own features (`specdec_course/drafters/feature_head.py`): fc over [token embedding;
the target's feature one position back] → one decoder layer (started from the target's last layer) → norm → the
target's output rows for its {info['vocab_subset']} most frequent answer tokens ({info['subset_coverage']:.1%} of the
answers' tokens). {info['parameters'] / 1e6:.1f} M parameters of its own (bfloat16); the embedding and output rows are
read from the target. Load it with `specdec_course.drafters.load_feature_head(target)`.

Trained with training-time test to depth {info['depth']} (deeper inputs are the head's own guesses of the feature),
{info['steps']} steps of {info['train_batch']} crops of up to {info['max_length']} positions, AdamW lr {info['lr']},
seed {info['seed']}, on {info['device']}, on {answers} of the target's greedy answers in
`specdec_course/data/{info['answers_file']}`.

α at each draft depth (of the steps that reached a depth, the share accepted), greedy, τ = {info['eval_tau']}, measured
on the first {info['eval_prompts']} prompts of the eval split (written independently of the training requests), for
heads trained on the first part of the answers (a depth that few steps reached is a rough estimate; – : no step
reached it):

{header}
{rule}
{rows}

Rebuild: `python -m specdec_course.distill answers --prompts N` (adds answers), then
`python -m specdec_course.distill head --out specdec_course/head`.
"""


if __name__ == "__main__":
    raise SystemExit(main())
