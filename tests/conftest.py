import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# With pytest-xdist (make test runs two workers), the workers share the machine's cores: each computes on its share.
# Two workers each on every core would make torch's threads spin-wait on one another (passes many times slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = _threads  # read by torch here and by every kernel or process a test starts


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def target():
    """The real SmolLM2-135M-Instruct target and its tokenizer (converted once, then cached)."""
    from specdec_course import load_target

    return load_target()


def first_mismatch_margin(model, prompt_ids, expected, got):
    """Where two greedy token lists first differ, the target's top-2 logit margin there (a near tie or a bug?)."""
    from specdec_course.generation import mismatch_margin

    return mismatch_margin(model, prompt_ids, list(expected), list(got))
