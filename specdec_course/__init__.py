"""specdec_course: speculative decoding, built step by step on a real pretrained model."""
from .models import (attach_tokenizer, cache_dir, chat_prompt, describe_machine, get_device, load_target,
                     tiny_llama)
from .generation import GenerationResult, autoregressive_generate, forward_time

__all__ = [
    "GenerationResult", "attach_tokenizer", "autoregressive_generate", "cache_dir", "chat_prompt",
    "describe_machine", "forward_time", "get_device", "load_target", "quick_mode", "tiny_llama",
]


def quick_mode() -> bool:
    """True when $SPECDEC_QUICK=1 (set by the test command): notebooks shrink their long loops."""
    import os

    return os.environ.get("SPECDEC_QUICK", "") not in ("", "0")
