"""Which matrix-multiply code each model runs on, chosen by measurement.

Almost all of a forward pass is matrix products y = x · Wᵀ (every nn.Linear). The same product can run
through different libraries, and on a CPU the choice can matter more than anything else:

* "stock": as transformers loads the model. fp32 nn.Linear calls the BLAS torch was built with (MKL on
  x86). MKL is tuned for Intel CPUs and large matrices; for a few rows (x with M = 1 … 16 tokens, exactly
  the shapes of decoding and verification) it can be slow, and slower for 2-3 rows than for 4.
* "column-major-head": stock, but the output layer's W (vocab × hidden) is stored transposed in memory.
  Same numbers; for one token, some BLAS libraries read it much faster.
* "onednn": every W is re-ordered once, at load, into the blocked layout oneDNN's kernels read best
  ("pre-packed"), and each product calls oneDNN directly. Same numbers up to rounding.
* "mixed": the stock product below a number of rows, oneDNN's from it on (``use_kernels(..., min_rows=)``):
  one library can be best for one token and the other for several.

No path is assumed to be the fast one: ``choose_kernels`` times one cached forward pass on each path,
interleaved, on this machine, and keeps the fastest (stock on a tie). The result is remembered per
machine and model shape in the course's cache folder, so later loads skip the timing.
"""
from __future__ import annotations

import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from . import clock

KERNEL_PATHS = ("stock", "column-major-head", "onednn", "mixed")
KERNEL_CHOICES = ("auto",) + KERNEL_PATHS
CHOICES_FILE = "kernel_choices.json"
TARGET_KS = (1, 2, 3, 4, 6, 8)   # target: 1 token (target-only decoding) and τ + 1 tokens (verification)
DRAFT_KS = (1, 2)          # draft: one token per draft step, two when it catches up after a step
DEFAULT_MIN_ROWS = 3       # the "mixed" path's switch-over when none was measured


# --------------------------------------------------------------------------- the oneDNN path
def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch build can run pre-packed oneDNN products on this CPU in ``dtype``."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16:
        return bf16_supported("cpu")
    return dtype == torch.float32


def bf16_supported(device) -> bool:
    """True when ``device`` computes in bfloat16 natively (a CPU with AVX-512 BF16 or AMX, or a recent GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check()) if check is not None else False
    return False


class OneDNNLinear(torch.nn.Module):
    """y = x · Wᵀ + b with W pre-packed for oneDNN. Shares ``weight`` and ``bias`` with the nn.Linear it replaces.

    Inference only: the packed copy is made once, so if the weights change (training), re-apply the path.
    With gradients on, it falls back to the stock product, so training still works.
    """

    def __init__(self, linear: torch.nn.Linear, min_rows: int = 1):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.min_rows = min_rows  # fewer rows than this (tokens × batch) take the stock product
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and self.weight.requires_grad) or x.numel() < self.min_rows * self.in_features:
            return F.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def to_linear(self) -> torch.nn.Linear:
        """The plain nn.Linear again, with the same weight and bias parameters."""
        linear = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        rows = "" if self.min_rows <= 1 else f" from {self.min_rows} rows on"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, oneDNN pre-packed{rows}"


def _linear_modules(model, kind):
    """(parent, attribute name, module) for every submodule of class ``kind``."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is kind:
                found.append((parent, name, child))
    return found


# --------------------------------------------------------------------------- switching paths
def kernel_path(model) -> str:
    """The path ``model`` runs on now: "stock", "column-major-head" or "onednn"."""
    return getattr(model, "kernel_path", "stock")


def _output_linear(model):
    """The module holding the output layer's weight (inside a reduced-vocabulary head, its projection)."""
    head = model.get_output_embeddings()
    return getattr(head, "proj", head)


def column_major_output_layer(model) -> None:
    """Store the output layer's weight W (vocab × hidden) column-major: the same numbers in transposed memory order.

    logits = h · Wᵀ. For one token this is a matrix-vector product, whose speed on a CPU depends on how W
    lies in memory. The output layer gets its own copy (a tied input embedding keeps the original), so the
    logits are unchanged and the model still saves with ``save_pretrained``.
    """
    head = _output_linear(model)
    weight = head.weight.detach()
    if weight.t().is_contiguous():
        return
    if "_stock_head_weight" not in model.__dict__:  # kept outside the module's parameters: not saved, restorable
        object.__setattr__(model, "_stock_head_weight", head.weight)
    head.weight = torch.nn.Parameter(weight.t().contiguous().t(), requires_grad=head.weight.requires_grad)
    model.kernel_path = "column-major-head"


def _restore_stock(model) -> None:
    for parent, name, module in _linear_modules(model, OneDNNLinear):
        setattr(parent, name, module.to_linear())
    stock_head = model.__dict__.pop("_stock_head_weight", None)
    if stock_head is not None:
        _output_linear(model).weight = stock_head
    model.kernel_path = "stock"
    model.onednn_min_rows = None


def use_kernels(model, path: str, *, min_rows: int | None = None):
    """Switch ``model`` in place to kernel ``path`` (see KERNEL_PATHS); returns the model.

    ``min_rows`` (path "mixed" only): from how many rows (tokens) on oneDNN takes over; default DEFAULT_MIN_ROWS.
    Every path computes the same function: logits agree to float rounding (about 1e-5 relative in fp32).
    """
    if path == kernel_path(model) and min_rows is None and getattr(model, "onednn_min_rows", None) is None:
        return model  # already there (this also covers a model with a path of its own, such as a quantized copy)
    if path not in KERNEL_PATHS:
        raise ValueError(f"unknown kernel path {path!r}: use one of {', '.join(map(repr, KERNEL_PATHS))} (or 'auto' when loading)")
    if path == "mixed":
        min_rows = DEFAULT_MIN_ROWS if min_rows is None else min_rows
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 2:
            raise ValueError(f"min_rows must be a whole number of at least 2 for the 'mixed' path, got {min_rows!r}")
    elif min_rows is not None:
        raise ValueError(f"min_rows applies to the 'mixed' path only, not to {path!r}")
    if path == kernel_path(model) and getattr(model, "onednn_min_rows", None) == min_rows:
        return model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if path != "stock" and device.type != "cpu":
        raise ValueError(f"kernel path {path!r} is for a CPU; the model is on {device}, where only 'stock' applies")
    if path in ("onednn", "mixed") and not onednn_available(dtype):
        raise ValueError(f"kernel path {path!r} is not available here for {dtype} (this torch build or CPU lacks it); "
                         "use 'stock' or 'column-major-head'")
    if {path, kernel_path(model)} <= {"onednn", "mixed"}:  # same packed weights, only the switch-over moves
        for _, _, module in _linear_modules(model, OneDNNLinear):
            module.min_rows = min_rows or 1
        model.kernel_path, model.onednn_min_rows = path, min_rows
        return model
    _restore_stock(model)
    if path == "column-major-head":
        column_major_output_layer(model)
    elif path in ("onednn", "mixed"):
        for parent, name, module in _linear_modules(model, torch.nn.Linear):
            setattr(parent, name, OneDNNLinear(module, min_rows or 1))
    model.kernel_path = path
    model.onednn_min_rows = min_rows
    return model


def available_paths(model) -> list[str]:
    """The kernel paths that can run ``model`` where it is: all three on a CPU with oneDNN, else fewer."""
    param = next(model.parameters())
    if param.device.type != "cpu":
        return ["stock"]
    paths = ["stock", "column-major-head"]
    if onednn_available(param.dtype):
        paths += ["onednn", "mixed"]
    return paths


# --------------------------------------------------------------------------- measuring
@torch.no_grad()
def pass_times(model, paths, ks=TARGET_KS, *, prefix_length: int = 64, repeats: int = 5, seed: int = 0,
               min_rows: int = DEFAULT_MIN_ROWS) -> dict:
    """Median seconds of one cached forward pass over k new tokens, for each path and k: ``{path: {k: s}}``.

    The paths take turns within every repeat (interleaved), so a machine that speeds up or slows down
    during the measurement affects them all alike. The model is left on the path it started on.
    ``min_rows`` is the switch-over of the "mixed" path.
    """
    from ..cache import new_cache
    from ..generation import sync

    start_path, start_rows = kernel_path(model), getattr(model, "onednn_min_rows", None)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prefix = torch.randint(0, vocab, (1, prefix_length), generator=gen).to(device)
    news = {k: torch.randint(0, vocab, (1, k), generator=gen).to(device) for k in ks}
    cache = new_cache(model, "dynamic", prefix_length + max(ks))
    model(prefix, past_key_values=cache, use_cache=True)
    samples = {path: {k: [] for k in ks} for path in paths}
    try:
        for repeat in range(repeats + 1):  # the first round warms every path up and is not counted
            for path in paths:
                use_kernels(model, path, min_rows=min_rows if path == "mixed" else None)
                for k in ks:
                    sync(device)
                    start = clock.now()
                    model(news[k], past_key_values=cache, use_cache=True)
                    sync(device)
                    if repeat:
                        samples[path][k].append(clock.now() - start)
                    cache.crop(-k)
    finally:
        use_kernels(model, start_path, min_rows=start_rows)
    return {path: {k: sorted(v)[len(v) // 2] for k, v in by_k.items()} for path, by_k in samples.items()}


def current_pass_times(model, ks, *, prefix_length: int = 64, repeats: int = 5) -> dict:
    """``pass_times`` on the path ``model`` runs on now (with its own switch-over if "mixed"): ``{k: seconds}``."""
    path = kernel_path(model)
    rows = getattr(model, "onednn_min_rows", None)
    return pass_times(model, [path], list(ks), prefix_length=prefix_length, repeats=repeats,
                      **({"min_rows": rows} if rows else {}))[path]


def switch_over(times: dict) -> int | None:
    """The fewest rows from which "onednn" measured faster than "stock" at every larger k too (None: never, or always)."""
    ks = sorted(times["stock"])
    for i, k in enumerate(ks):
        if all(times["onednn"][j] < times["stock"][j] for j in ks[i:]):
            return k if k > 1 else None
    return None


def fastest_path(times: dict) -> str:
    """The path with the least total time over the measured k (stock wins ties): never one that measured slower."""
    def total(path):
        return sum(times[path].values())

    best = "stock" if "stock" in times else next(iter(times))
    for path in times:
        if total(path) < total(best):
            best = path
    return best


def machine_key(model) -> str:
    """What a kernel measurement depends on: the CPU, torch, threads, the model's shape and dtype."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    c = model.config
    dtype = next(model.parameters()).dtype
    shape = (f"{getattr(c, 'model_type', '?')} L{getattr(c, 'num_hidden_layers', '?')} H{getattr(c, 'hidden_size', '?')} "
             f"I{getattr(c, 'intermediate_size', '?')} V{c.vocab_size}")
    return f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads | {shape} | {str(dtype).replace('torch.', '')}"


def choice_key(model, ks) -> str:
    """The key of a remembered kernel choice: the machine, the model and the k that were timed."""
    return f"{machine_key(model)} | k {','.join(map(str, ks))}"


def remembered_min_rows(model, ks=TARGET_KS) -> int:
    """The "mixed" path's switch-over as measured for ``model`` on this machine (DEFAULT_MIN_ROWS if none was)."""
    return (_read_choices().get(choice_key(model, ks)) or {}).get("min_rows") or DEFAULT_MIN_ROWS


def _choices_path():
    from ..storage import cache_dir

    return cache_dir() / CHOICES_FILE


def _read_choices() -> dict:
    try:
        return json.loads(_choices_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_choice(key: str, record: dict) -> None:
    path = _choices_path()
    choices = _read_choices()
    choices[key] = record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(choices, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder only means measuring again next time


def choose_kernels(model, kernels: str = "auto", *, ks=TARGET_KS, remember: bool = True, verbose: bool = False) -> str:
    """Put ``model`` on a kernel path and return its name.

    ``kernels``: "auto" (the default) uses the path measured fastest on this machine for this model shape,
    measuring it (a few seconds) the first time and remembering it in the cache folder; "measure" measures
    again; a path name (KERNEL_PATHS) uses that path. Off the CPU, "auto" is "stock".
    """
    if kernels not in KERNEL_CHOICES + ("measure",):
        raise ValueError(f"unknown kernels {kernels!r}: use 'auto', 'measure' or one of {', '.join(map(repr, KERNEL_PATHS))}")
    if kernels in KERNEL_PATHS:
        use_kernels(model, kernels)
        return kernels
    paths = available_paths(model)
    if paths == ["stock"]:
        use_kernels(model, "stock")
        return "stock"
    key = choice_key(model, ks)
    record = _read_choices().get(key) if kernels == "auto" and remember else None
    if record is None or record.get("path") not in paths:
        # first the three plain paths; then, if oneDNN wins only from some number of rows on, "mixed" switching there
        times = pass_times(model, [p for p in paths if p != "mixed"], ks)
        min_rows = switch_over(times) if "onednn" in times else None
        if min_rows is not None:
            times = pass_times(model, [p for p in paths if p != "mixed"] + ["mixed"], ks, min_rows=min_rows)
        record = {"path": fastest_path(times), "min_rows": min_rows,
                  "ms": {p: {str(k): round(1000 * s, 3) for k, s in by_k.items()} for p, by_k in times.items()},
                  "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        if remember:
            _write_choice(key, record)
        if verbose:
            summary = ", ".join(f"{p} {sum(v.values()):.1f} ms" for p, v in record["ms"].items())
            print(f"specdec_course: kernel paths measured (sum over k = {', '.join(map(str, ks))}): {summary}")
    use_kernels(model, record["path"], min_rows=record.get("min_rows") if record["path"] == "mixed" else None)
    return record["path"]
