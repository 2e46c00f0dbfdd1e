"""A draft cut from the target itself, predicting only the target's most frequent tokens.

Two ideas make a small draft both cheap and accurate:

* **Start from the target's own weights.** The draft is the target's token embedding, its first few
  transformer layers and its final norm (then distilled): it begins from the target's representations
  instead of from scratch. The embedding is not stored with the draft; it is read from the target.
* **A reduced output vocabulary (FR-Spec, Zhao et al. 2025).** A small draft spends most of its time in
  the output layer, logits = h · Wᵀ over all V tokens. Most generated text uses a few thousand of them, so
  the draft scores only the K most frequent: logits_K = h · W_Kᵀ, with W_K the target's output rows for
  those tokens; every other token gets logit −∞ (the draft never proposes it; the target can still emit it).
  Logits are returned over all V target token ids, so the draft is used exactly like any other.
"""
from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import torch

FORMAT = "specdec-course target-sliced draft"


class SubsetHead(torch.nn.Module):
    """Output layer over a subset of the vocabulary: logits[..., token_ids] = h · W_Kᵀ, −∞ elsewhere."""

    def __init__(self, weight: torch.Tensor, token_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        check_token_ids(token_ids, vocab_size)
        if weight.shape[0] != len(token_ids):
            raise ValueError(f"{weight.shape[0]} output rows for {len(token_ids)} token ids")
        self.proj = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(weight)
        self.register_buffer("token_ids", token_ids.long().clone(), persistent=False)
        self.vocab_size = vocab_size

    @property
    def weight(self) -> torch.Tensor:
        """W_K, the output rows of the subset's tokens (K × hidden)."""
        return self.proj.weight

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the K subset tokens only, in the order of ``token_ids`` (for training)."""
        return self.proj(hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = self.proj(hidden)
        full = small.new_full(small.shape[:-1] + (self.vocab_size,), float("-inf"))
        return full.index_copy_(-1, self.token_ids, small)

    def extra_repr(self) -> str:
        return f"{len(self.token_ids)} of {self.vocab_size} tokens"


def check_token_ids(token_ids: torch.Tensor, vocab_size: int) -> None:
    ids = torch.as_tensor(token_ids).reshape(-1).tolist()
    if not ids or len(set(ids)) != len(ids) or max(ids) >= vocab_size or min(ids) < 0:
        raise ValueError(f"token_ids must be distinct ids in [0, {vocab_size}), at least one")


def frequent_tokens(sequences, k: int, *, always=()) -> torch.Tensor:
    """The ``k`` token ids that occur most often in ``sequences`` (ties: smaller id first), ``always`` included."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    counts = Counter()
    for seq in sequences:
        counts.update(torch.as_tensor(seq).reshape(-1).tolist())
    chosen = list(dict.fromkeys(int(t) for t in always))
    for token, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(chosen) >= k:
            break
        if token not in chosen:
            chosen.append(token)
    return torch.tensor(chosen[:k], dtype=torch.long)


def _shared_output_layer(weight) -> torch.nn.Linear:
    """The draft's own output module around the target's (frozen) output weight: the same numbers, and a kernel
    path switched on the draft never touches the target's module."""
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    head.weight = torch.nn.Parameter(weight.detach(), requires_grad=False)  # same storage, never trained
    return head


def target_sliced_draft(target, num_layers: int, token_ids: torch.Tensor | None = None):
    """A draft made of the target's embedding, its first ``num_layers`` layers and its final norm; its output layer
    is the target's, restricted to ``token_ids`` when given (SubsetHead). The embedding is shared, not copied."""
    from transformers import LlamaForCausalLM

    n_target = target.config.num_hidden_layers
    if not 1 <= num_layers <= n_target:
        raise ValueError(f"num_layers must be between 1 and the target's {n_target}, got {num_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    config.tie_word_embeddings = False  # the output layer is (a subset of) the embedding, handled below
    config.specdec_draft = {"format": FORMAT, "embedding": "target", "vocab_subset": None if token_ids is None else len(token_ids)}
    with torch.device("meta"):
        draft = LlamaForCausalLM(config)
    draft.model.embed_tokens = target.model.embed_tokens  # shared with the target (frozen)
    # fresh modules loaded with copies of the target's tensors (whatever kernel path the target runs on)
    device, dtype = target.model.embed_tokens.weight.device, target.model.embed_tokens.weight.dtype
    layer_class, norm_class = type(target.model.layers[0]), type(target.model.norm)
    layers = []
    for i in range(num_layers):
        layer = layer_class(config, i).to(device=device, dtype=dtype)
        layer.load_state_dict({k: v.detach().clone() for k, v in target.model.layers[i].state_dict().items()})
        layers.append(layer)
    draft.model.layers = torch.nn.ModuleList(layers)
    draft.model.norm = norm_class(config.hidden_size, eps=config.rms_norm_eps).to(device=device, dtype=dtype)
    draft.model.norm.load_state_dict({k: v.detach().clone() for k, v in target.model.norm.state_dict().items()})
    draft.model.rotary_emb = type(target.model.rotary_emb)(config=config).to(device)
    output_weight = target.get_output_embeddings().weight
    if token_ids is None:
        draft.lm_head = _shared_output_layer(output_weight)
    else:
        check_token_ids(token_ids, config.vocab_size)
        draft.lm_head = SubsetHead(output_weight.detach()[token_ids].clone(), token_ids.to(output_weight.device),
                                   config.vocab_size)
    draft.model.embed_tokens.weight.requires_grad_(False)
    return draft.eval()


def is_sliced_draft_folder(folder) -> bool:
    config = Path(folder) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("specdec_draft", {}).get("format") == FORMAT


def trained_state(draft) -> dict:
    """The tensors a target-sliced draft stores: its layers, final norm and output rows (not the shared embedding)."""
    state = {k: v.detach().contiguous() for k, v in draft.state_dict().items() if not k.startswith("model.embed_tokens.")}
    if isinstance(draft.lm_head, SubsetHead):
        state = {k.replace("lm_head.proj.", "lm_head."): v for k, v in state.items()}
        state["lm_head.token_ids"] = draft.lm_head.token_ids.to(torch.int32).cpu()
    else:
        state.pop("lm_head.weight", None)  # the target's own output layer
    return state


def save_sliced_draft(draft, folder, *, dtype=torch.float16) -> None:
    """Write config.json and model.safetensors (layers, norm, output rows and their token ids; no embedding)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    state = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in trained_state(draft).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    draft.config.to_json_file(str(folder / "config.json"))


def load_sliced_draft(folder, embedding: torch.nn.Embedding, output_weight: torch.Tensor | None = None, *, dtype=torch.float32):
    """Rebuild a draft saved by ``save_sliced_draft`` around the target's ``embedding`` (shared, not copied).
    ``output_weight``: the target's output layer (needed only when the draft keeps the full vocabulary)."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    config = LlamaConfig.from_json_file(str(folder / "config.json"))
    state = load_file(str(folder / "model.safetensors"))
    if embedding.weight.shape != (config.vocab_size, config.hidden_size):
        raise ValueError(f"the draft in {folder} needs a {config.vocab_size} x {config.hidden_size} target embedding, "
                         f"got {tuple(embedding.weight.shape)}: is this the draft's own target?")
    config.tie_word_embeddings = False
    with torch.device("meta"):
        draft = LlamaForCausalLM(config)
    draft.model.embed_tokens = embedding
    token_ids = state.pop("lm_head.token_ids", None)
    head = state.pop("lm_head.weight", None)
    if token_ids is not None:
        draft.lm_head = SubsetHead(head.to(dtype), token_ids.long(), config.vocab_size)
    else:
        if output_weight is None:
            raise ValueError(f"the draft in {folder} uses the target's whole output layer: pass output_weight")
        draft.lm_head = _shared_output_layer(output_weight)
    missing = [k for k, _ in draft.named_parameters() if k.startswith("model.") and not k.startswith("model.embed_tokens.")
               and k not in state]
    if missing:
        raise ValueError(f"{folder}/model.safetensors lacks {missing[:3]}{'...' if len(missing) > 3 else ''}")
    draft.model.load_state_dict({k[len("model."):]: v.to(dtype) for k, v in state.items() if k.startswith("model.")},
                                strict=False, assign=True)
    draft.model.rotary_emb = type(draft.model.rotary_emb)(config=config)
    draft.to(dtype)
    return draft.eval()


def export_plain(draft, folder, *, dtype=torch.float16) -> None:
    """Save as a plain LlamaForCausalLM that ``AutoModelForCausalLM.from_pretrained`` and transformers' assisted
    generation load without this package: the full embedding, and an output layer over every token (the
    target's rows, with the draft's own rows for its subset). Outside the subset the plain model can score a
    token the draft never would, so where the draft's argmax would fall outside it the two can differ."""
    from transformers import LlamaForCausalLM

    config = copy.deepcopy(draft.config)
    config.tie_word_embeddings = False
    if hasattr(config, "specdec_draft"):
        del config.specdec_draft
    state = {k: v.detach().clone() for k, v in draft.state_dict().items() if not k.startswith("lm_head.")}
    head = draft.model.embed_tokens.weight.detach().clone()
    if isinstance(draft.lm_head, SubsetHead):
        head[draft.lm_head.token_ids] = draft.lm_head.weight.detach().to(head.dtype)
    else:
        head = draft.lm_head.weight.detach().clone()
    state["lm_head.weight"] = head
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(state, strict=True)
    Path(folder).mkdir(parents=True, exist_ok=True)
    plain.to(dtype).save_pretrained(str(folder))


def warmup_cosine(optimizer, steps: int):
    """Learning rate: linear warm-up over the first 5% of ``steps``, then cosine decay to 0 (a LambdaLR)."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
