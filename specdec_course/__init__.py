"""specdec_course: speculative decoding, built step by step on a real pretrained model."""
# the textbook loop: draft, verify, accept, correct (speculative_generate runs the four steps)
from .draft import Draft, draft_tokens
from .verify import verify, verify_logits
from .accept import Acceptance, accept, consecutive_accepted
from .correction import correction_token, residual
from .speculative import SpecResult, StepTrace, speculative_generate
# the models it runs on, and plain autoregressive decoding to compare with
from .models import (attach_tokenizer, cache_dir, chat_prompt, check_pair, describe_machine,
                     get_device, load_draft, load_pair, load_target, tiny_llama)
from .generation import GenerationResult, autoregressive_generate, forward_time
from .perf.kernels import KERNEL_PATHS, choose_kernels, column_major_output_layer, kernel_path, pass_times, use_kernels

__all__ = [
    "Acceptance", "Draft", "SpecResult", "StepTrace", "accept", "consecutive_accepted", "correction_token", "draft_tokens",
    "residual", "speculative_generate", "verify", "verify_logits",
    "GenerationResult", "attach_tokenizer", "autoregressive_generate", "cache_dir", "chat_prompt", "check_pair",
    "column_major_output_layer", "load_draft", "load_pair",
    "KERNEL_PATHS", "choose_kernels", "kernel_path", "pass_times", "use_kernels",
    "describe_machine", "forward_time", "get_device", "load_target", "quick_mode", "run_line", "tiny_llama",
]


def quick_mode() -> bool:
    """True when $SPECDEC_QUICK=1 (set by the test command): notebooks shrink their long loops."""
    import os

    return os.environ.get("SPECDEC_QUICK", "") not in ("", "0")


def run_line() -> str:
    """Where and how this run's numbers are measured: the machine, and quick or full mode (how to switch)."""
    mode = ("quick mode (SPECDEC_QUICK=1: shorter loops, noisier numbers; unset it for the full run)" if quick_mode()
            else "full mode (set SPECDEC_QUICK=1 for a quick run)")
    return f"machine: {describe_machine()}\nmode: {mode}"
