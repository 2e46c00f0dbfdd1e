"""CUDA graphs for the decoding loop: each step's passes launched as one recorded graph.

On a GPU a 135M-parameter model at batch size 1 spends most of a forward pass launching its ~400 small kernels from
Python, not computing them. A CUDA graph records the kernels of a function once and replays them with one launch.
It asks for fixed shapes and fixed addresses:

* a **static KV cache** (fixed tensors; transformers' ``StaticCache`` keeps its length as a counter on the device);
* **input buffers** written in place before a replay;
* positions and the attention mask computed **on the device** from the cache's own counter: a pass over k new tokens
  at cache length L has positions L … L+k−1 and lets row i see columns 0 … L+i (the unused rest of the cache is masked);
* no host round trip inside: a greedy step reads one number back (how many drafts were accepted) and nothing else.

``StaticDecoder`` decodes greedily with these rules, target-only or speculative with a draft model:

    target-only, per token:   one graph (the target over its pending token; argmax written back into the buffer)
    speculative, per step:    graph 1: the draft reads its 1 or 2 unseen tokens, then proposes τ tokens (τ passes)
                              graph 2: the target verifies [pending, d_1 … d_τ], n = accepted run, the correction
                                       becomes the next pending token, both caches' counters roll back to the kept length
                              one read: n, the target's argmax row and the drafts

Away from CUDA (``graphs=False``) the same functions run as they are, so the loop is tested on a CPU and its output is
the target's greedy output token for token.
"""
from __future__ import annotations

import torch

from ..cache import new_cache


def _counter(cache) -> torch.Tensor:
    """The cache's length, as the device tensor transformers' static layers keep (layer 0's; every layer agrees)."""
    return cache.layers[0].cumulative_length


def set_cache_length(cache, length) -> None:
    """Every layer's counter to ``length`` (an int or a device tensor); stale entries past it are masked, then overwritten."""
    for layer in cache.layers:
        if isinstance(length, torch.Tensor):
            layer.cumulative_length.copy_(length)
        else:
            layer.cumulative_length.fill_(int(length))


def static_pass(model, cache, ids: torch.Tensor, capacity: int, *, start: int | None = None) -> torch.Tensor:
    """Logits (k, vocab) of ``model`` over the k tokens ``ids`` after the cached ones, on a static cache of ``capacity``.
    Positions and the causal mask come from the cache's counter on the device (``start``: give the length from the host
    instead, for the first pass, before the cache has made its tensors)."""
    k = ids.shape[-1]
    offsets = torch.arange(k, device=ids.device)
    positions = (offsets + (start if start is not None else _counter(cache))).view(1, k)
    columns = torch.arange(capacity, device=ids.device).view(1, capacity)
    allowed = columns <= positions.view(k, 1)
    mask = torch.full((k, capacity), torch.finfo(model.dtype).min, dtype=model.dtype, device=ids.device)
    mask = mask.masked_fill(allowed, 0.0)
    return model(ids.view(1, k), attention_mask=mask.view(1, 1, k, capacity), position_ids=positions,
                 past_key_values=cache, use_cache=True).logits[0]


class StaticDecoder:
    """Greedy decoding on static caches, target-only (``draft=None``) or speculative with a draft model, each step's
    passes captured as CUDA graphs (``graphs``: default on CUDA) and reused across prompts up to ``capacity`` tokens."""

    def __init__(self, target, draft=None, *, capacity: int, graphs: bool | None = None):
        self.target, self.draft, self.capacity = target, draft, int(capacity)
        self.device = torch.device(target.device)
        self.graphs = self.device.type == "cuda" if graphs is None else bool(graphs)
        if self.graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; the target is on {self.device} (use graphs=False)")
        if draft is not None and draft.config.vocab_size != target.config.vocab_size:
            raise ValueError("the draft must share the target's vocabulary")
        self.target_cache = new_cache(target, "static", self.capacity)
        self.draft_cache = new_cache(draft, "static", self.capacity) if draft is not None else None
        long = dict(dtype=torch.long, device=self.device)
        self.pending = torch.zeros(1, **long)        # the target's one unseen token
        self.draft_pending = torch.zeros(2, **long)  # the draft's unseen tokens (1, or 2 after a fully accepted step)
        self.drafts = torch.zeros(16, **long)
        self.result = torch.zeros(1 + 17 + 16, **long)  # n, the target's argmax row (τ + 1), the drafts (τ)
        self._captured: dict = {}
        self.graph_count = 0
        self.graph_error: str | None = None  # why capture failed, if it did (the decoder then runs without graphs)
        with torch.no_grad():  # one pass each makes the caches' tensors (and their counters' device copies) for good
            for model, cache in ((target, self.target_cache), (draft, self.draft_cache)):
                if cache is not None:
                    static_pass(model, cache, self.pending, self.capacity, start=0)
                    set_cache_length(cache, 0)

    # ------------------------------------------------------------------ graphs
    def _caches(self):
        return [c for c in (self.target_cache, self.draft_cache) if c is not None]

    def _run(self, key, function):
        """``function()`` once, or its captured graph replayed (captured on first use, after two warm-up runs whose
        effect on the caches' counters is undone)."""
        if not self.graphs:
            return function()
        if key not in self._captured:
            # warm-up runs move the counters and overwrite the buffers: put back what they changed
            state = [layer.cumulative_length for c in self._caches() for layer in c.layers]
            state += [self.pending, self.draft_pending, self.drafts, self.result]
            saved = [t.clone() for t in state]

            def restore():
                for tensor, value in zip(state, saved):
                    tensor.copy_(value)

            try:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        function()
                        restore()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):  # a memory pool of its own: graphs replay in any order
                    output = function()
            except RuntimeError as error:  # something in the pass cannot be recorded: go on without graphs, say why
                torch.cuda.synchronize()
                restore()
                self.graphs, self.graph_error = False, f"{type(error).__name__}: {error}"[:500]
                return function()
            restore()
            self._captured[key] = (graph, output)
            self.graph_count += 1
        graph, output = self._captured[key]
        graph.replay()
        return output

    # ------------------------------------------------------------------ the passes of one step
    def _target_token(self):
        """Target-only: read the pending token, write the next one (argmax) in its place."""
        logits = static_pass(self.target, self.target_cache, self.pending, self.capacity)
        self.pending.copy_(logits[-1].argmax().view(1))
        return self.pending

    def _draft_chain(self, unseen: int, tau: int):
        """The draft reads its ``unseen`` pending tokens, then proposes τ tokens greedily (τ passes in all)."""
        logits = static_pass(self.draft, self.draft_cache, self.draft_pending[:unseen], self.capacity)
        token = logits[-1].argmax().view(1)
        proposed = [token]
        for _ in range(tau - 1):
            token = static_pass(self.draft, self.draft_cache, token, self.capacity)[-1].argmax().view(1)
            proposed.append(token)
        self.drafts[:tau].copy_(torch.cat(proposed))
        return self.drafts

    def _verify(self, tau: int):
        """The target over [pending, d_1 … d_τ]; n = length of the accepted run; the next pending tokens; both caches'
        counters rolled back to the kept length (prefix + pending + n accepted drafts)."""
        drafts = self.drafts[:tau]
        before = _counter(self.target_cache).clone()
        best = static_pass(self.target, self.target_cache, torch.cat([self.pending, drafts]), self.capacity).argmax(-1)
        n = torch.cumprod((best[:tau] == drafts).long(), 0).sum()
        correction = best.gather(0, n.view(1))
        kept = before + 1 + n
        set_cache_length(self.target_cache, kept)
        # the draft fed d_1 … d_{τ−1}: it keeps what was accepted; after a full accept it still has d_τ to read
        set_cache_length(self.draft_cache, torch.minimum(_counter(self.draft_cache), kept))
        self.pending.copy_(correction)
        self.draft_pending.copy_(torch.cat([torch.where(n == tau, drafts[-1:], correction), correction]))
        self.result[0:1].copy_(n.view(1))
        self.result[1:tau + 2].copy_(best)
        self.result[tau + 2:2 * tau + 2].copy_(drafts)
        return self.result

    # ------------------------------------------------------------------ generation
    def _start(self, ids: torch.Tensor) -> None:
        """Fill the caches with the prompt but its last token, which becomes the pending one."""
        ids = ids.view(-1).to(self.device)
        for cache, model in ((self.target_cache, self.target), (self.draft_cache, self.draft)):
            if cache is None:
                continue
            set_cache_length(cache, 0)
            if ids.numel() > 1:
                static_pass(model, cache, ids[:-1], self.capacity, start=0)
        self.pending.copy_(ids[-1:])
        self.draft_pending[:1].copy_(ids[-1:])

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int, *, tau: int | None = None, eos_token_id: int | None = None):
        """(tokens, target passes): up to ``max_new_tokens`` greedy tokens after ``input_ids``; speculative with τ
        drafts per target pass when ``tau`` is given (needs the draft), target-only otherwise."""
        ids = torch.as_tensor(input_ids).view(-1)
        if tau is not None and (self.draft is None or not 1 <= int(tau) <= 16):
            raise ValueError("speculative decoding needs the draft model and 1 ≤ τ ≤ 16" if self.draft is None else
                             f"tau must be between 1 and 16, got {tau}")
        room = ids.numel() + max_new_tokens + (tau or 0) + 1
        if room > self.capacity:
            raise ValueError(f"the prompt ({ids.numel()} tokens), {max_new_tokens} new tokens and a step's drafts need "
                             f"{room} cache positions; this decoder holds {self.capacity}")
        self._start(ids)
        tokens: list[int] = []
        passes = 0
        if tau is None:
            while len(tokens) < max_new_tokens:
                tokens.append(int(self._run("target", self._target_token).item()))
                passes += 1
                if tokens[-1] == eos_token_id:
                    break
            return tokens, passes
        unseen = 1
        while len(tokens) < max_new_tokens:
            self._run(("draft", unseen, tau), lambda: self._draft_chain(unseen, tau))
            row = self._run(("verify", tau), lambda: self._verify(tau))[:2 * tau + 2].tolist()
            passes += 1
            n, best, drafts = row[0], row[1:tau + 2], row[tau + 2:]
            emitted = drafts[:n] + [best[n]]
            if eos_token_id is not None and eos_token_id in emitted:
                tokens += emitted[:emitted.index(eos_token_id) + 1]
                break
            tokens += emitted
            unseen = 2 if n == tau else 1
        return tokens[:max_new_tokens], passes


@torch.no_grad()
def graphed_benchmark(target, draft, tokenizer, prompts, *, max_new_tokens: int = 96, taus=(2, 3, 4),
                      eager_prompts: int = 6, progress: bool = True) -> dict:
    """Greedy decoding on static caches, prompt by prompt in turns: target-only and speculative (the draft model, each
    τ) with CUDA graphs on every prompt; the same decoder without graphs and transformers' ``generate`` on the first
    ``eager_prompts``. Each row: tokens/s, ms per token, tokens per target pass, its ratio to graphed target-only (or,
    for the eager rows, to eager target-only) and whether every output equals graphed target-only's (a mismatch is
    reported with the target's top-2 logit margin there). Off CUDA the "graphed" rows run without graphs."""
    import time

    from ..generation import mismatch_margin, sync
    from ..models import chat_prompt
    from .benchmark import transformers_generate

    device = torch.device(target.device)

    def timed(function):
        sync(device)
        began = time.perf_counter()
        out = function()
        sync(device)
        return out, time.perf_counter() - began

    eos = tokenizer.eos_token_id
    ids = [chat_prompt(tokenizer, p)[0].to(device) for p in prompts]
    capacity = max(len(x) for x in ids) + max_new_tokens + max(taus) + 2
    graphed = StaticDecoder(target, draft, capacity=capacity, graphs=device.type == "cuda")
    eager = StaticDecoder(target, draft, capacity=capacity, graphs=False)
    configs = [("target only, static cache, graphed", graphed, None)]
    configs += [(f"speculative (draft model), graphed", graphed, tau) for tau in taus]
    eager_configs = [("target only, static cache, eager", eager, None), ("speculative (draft model), eager", eager, 3)]
    # warm-up: captures every graph (and warms transformers' generate) on the first prompt, not timed
    for _, decoder, tau in configs + eager_configs:
        decoder.generate(ids[0], max_new_tokens, tau=tau, eos_token_id=eos)
    transformers_generate(target, [ids[0].view(1, -1)], 8, eos)
    keys = [(name, tau) for name, _, tau in configs + eager_configs] + [("transformers generate (greedy)", None)]
    totals = {key: {"seconds": 0.0, "tokens": 0, "passes": 0, "identical": [], "prompts": 0} for key in keys}
    margins = []
    for index, x in enumerate(ids):
        reference = None
        runs = configs + (eager_configs if index < eager_prompts else [])
        for name, decoder, tau in runs:
            (tokens, passes), seconds = timed(lambda: decoder.generate(x, max_new_tokens, tau=tau, eos_token_id=eos))
            reference = tokens if reference is None else reference
            row = totals[(name, tau)]
            row["seconds"] += seconds
            row["tokens"] += len(tokens)
            row["passes"] += passes
            row["prompts"] += 1
            row["identical"].append(tokens == reference)
            if tokens != reference:
                position, margin = mismatch_margin(target, x.view(1, -1), reference, tokens)
                margins.append({"config": name, "tau": tau, "prompt": index, "position": position, "top2_margin": margin})
        if index < eager_prompts:
            outputs, seconds = transformers_generate(target, [x.view(1, -1)], max_new_tokens, eos)
            row = totals[("transformers generate (greedy)", None)]
            row["seconds"] += seconds
            row["tokens"] += len(outputs[0])
            row["passes"] += len(outputs[0])
            row["prompts"] += 1
            row["identical"].append(outputs[0] == reference)
        if progress:
            print(f"prompt {index + 1}/{len(ids)}", flush=True)
    base = totals[(configs[0][0], None)]
    base_eager = totals[(eager_configs[0][0], None)]
    rows = []
    for (name, tau), row in totals.items():
        if not row["prompts"]:
            continue
        tps = row["tokens"] / row["seconds"]
        # each row's ratio: to graphed target-only on the same prompts (all prompts, or the eager rows' first ones)
        if row["prompts"] == base["prompts"]:
            ratio = tps / (base["tokens"] / base["seconds"])
        else:
            ratio = None
        rows.append({"config": name, "tau": tau, "prompts": row["prompts"], "tokens": row["tokens"],
                     "tokens_per_s": tps, "ms_per_token": 1000 * row["seconds"] / row["tokens"],
                     "tokens_per_pass": row["tokens"] / max(row["passes"], 1), "ratio_to_graphed_target": ratio,
                     "identical": all(row["identical"])})
    # the eager rows against eager target-only on the same (first) prompts
    eager_tps = base_eager["tokens"] / base_eager["seconds"] if base_eager["seconds"] else None
    for r in rows:
        if r["prompts"] == base_eager["prompts"] and eager_tps:
            r["ratio_to_eager_target"] = r["tokens_per_s"] / eager_tps
    return {"prompts": len(ids), "eager_prompts": eager_prompts, "max_new_tokens": max_new_tokens,
            "graphs_captured": graphed.graph_count, "graph_error": graphed.graph_error, "rows": rows, "mismatches": margins}


def format_graphed_report(report: dict) -> str:
    """A GPU recording (``benchmarks/bench_h200.json``: the machine, ``graphed_benchmark``'s table and the course loop's
    chain and tree rows) as text."""
    m = report["machine"]
    g = report["sections"]["graphs"]
    lines = [f"recorded on: {m['gpu']}, torch {m['torch']}, transformers {m['transformers']}, {m['date']}",
             f"greedy, float32; {g['prompts']} evaluation prompts x {g['max_new_tokens']} new tokens "
             f"(eager rows: the first {g['eager_prompts']})",
             f"{'configuration':38s} {'tau':>3s} {'prompts':>7s} {'tokens/s':>8s} {'ms/token':>8s} {'tok/pass':>8s} "
             f"{'ratio':>17s} {'identical':>9s}"]
    for r in g["rows"]:
        if r.get("ratio_to_graphed_target") is not None:
            ratio = f"{r['ratio_to_graphed_target']:.2f}x graphed"
        else:
            ratio = f"{r['ratio_to_eager_target']:.2f}x eager"
        lines.append(f"{r['config']:38s} {'' if r['tau'] is None else r['tau']:>3} {r['prompts']:7d} "
                     f"{r['tokens_per_s']:8.1f} {r['ms_per_token']:8.2f} {r['tokens_per_pass']:8.2f} {ratio:>17s} "
                     f"{'yes' if r['identical'] else 'NO':>9s}")
    trees = report["sections"].get("trees")
    if trees:
        lines += ["", f"the course's eager loop (dynamic caches), the first {trees['prompts']} prompts x "
                      f"{trees['max_new_tokens']} new tokens:"]
        for r in trees["rows"]:
            setting = "" if r["setting"] in (None, "static") else (
                f"τ = {r['setting']}" if r["config"].startswith("chain") else f"{r['setting']} nodes")
            lines.append(f"{r['config'] + (', ' + setting if setting else ''):52s} {r['tokens_per_s']:8.1f} tokens/s "
                         f"{r['ratio']:5.2f}x  {r['tokens_per_pass']:5.2f} tokens per pass  identical: "
                         f"{'yes' if r['identical'] else 'NO'}")
    return "\n".join(lines)
