import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def target():
    """The real SmolLM2-135M-Instruct target and its tokenizer (converted once, then cached)."""
    from specdec_course import load_target

    return load_target()


def first_mismatch_margin(model, prompt_ids, expected, got):
    """Where two greedy token lists first differ, the target's top-2 logit margin there (a near tie or a bug?)."""
    from specdec_course.generation import mismatch_margin

    return mismatch_margin(model, prompt_ids, list(expected), list(got))
