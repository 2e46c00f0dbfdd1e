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
    import torch

    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            context = torch.cat([prompt_ids.reshape(1, -1), torch.tensor([expected[:i]], dtype=torch.long)], dim=1)
            with torch.no_grad():
                top2 = model(context.to(model.device)).logits[0, -1].float().topk(2).values
            return i, float(top2[0] - top2[1])
    return None, None
