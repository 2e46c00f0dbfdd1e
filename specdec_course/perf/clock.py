"""The clock every timing in the course reads: the wall clock, or a simulated one whose costs you set.

``now()`` is ``time.perf_counter()``: what a learner's run really costs on their machine. Inside ``simulated()``,
``now()`` reads a simulated clock instead, which starts at 0 and moves only when something *spends* time:

    with clock.simulated(), clock.added_cost(target, ms_per_pass=40, ms_per_extra_token=4), \\
            clock.added_cost(draft, ms_per_pass=3):
        result = speculative_generate(target, draft, ids, 40, trace="run.jsonl")

Every target pass over k tokens then costs exactly 40 + 4 (k − 1) ms and every draft pass 3 ms (``simulated_costs``
says the same in one line); Python's own overhead and the machine's speed count for nothing, so the timings, the
trace and the analyser's verdict are the same on every machine. That is how a test or an exercise check sets a cost relationship (a slow draft, slow
kernels, a healthy run) instead of hoping the machine has it.

``SPECDEC_TEST_SLOWDOWN=N`` (N ≥ 1) makes every forward pass of a tiny model (``models.tiny_llama`` and the drafts
copied from one) take N times as long on the wall clock: the test suite run as a machine N times slower would run it.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

_simulated_now: float | None = None   # seconds on the simulated clock; None: the wall clock is in use
_added: dict[int, list] = {}          # id(model) -> [(ms_per_pass, ms_per_extra_token), ...] of its open added_cost blocks

SLOWDOWN_VARIABLE = "SPECDEC_TEST_SLOWDOWN"


def now() -> float:
    """Seconds: ``time.perf_counter()``, or the simulated clock inside ``simulated()``."""
    return time.perf_counter() if _simulated_now is None else _simulated_now


def is_simulated() -> bool:
    return _simulated_now is not None


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # busy-wait: as precise as a kernel, unlike sleep
        pass


def spend(ms: float) -> None:
    """Cost ``ms`` milliseconds: move the simulated clock on by exactly that, or busy-wait that long on the wall clock."""
    global _simulated_now
    if ms <= 0:
        return
    if _simulated_now is None:
        _busy_wait(ms / 1000)
    else:
        _simulated_now += ms / 1000


@contextmanager
def simulated():
    """Inside the ``with`` block, ``now()`` reads a simulated clock (starting at 0) that only ``spend`` moves:
    a model's forward pass costs what ``added_cost`` gives it, and nothing else costs anything."""
    global _simulated_now
    before = _simulated_now
    _simulated_now = 0.0
    try:
        yield
    finally:
        _simulated_now = before


def _tokens_in(args, kwargs) -> int:
    ids = args[0] if args else kwargs.get("input_ids")
    if ids is None:
        ids = kwargs.get("inputs_embeds")
        return int(ids.shape[-2]) if ids is not None else 1
    return int(ids.shape[-1])


@contextmanager
def added_cost(model, ms_per_pass: float = 0.0, ms_per_extra_token: float = 0.0):
    """Every forward pass of ``model`` over k tokens costs ``ms_per_pass`` + ``ms_per_extra_token`` × (k − 1) ms more
    (``spend``: busy-waiting on the wall clock, exactly that much on a simulated one) until the ``with`` block ends."""
    for name, value in (("ms_per_pass", ms_per_pass), ("ms_per_extra_token", ms_per_extra_token)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number of milliseconds ≥ 0, got {value!r}")

    def hook(module, args, kwargs):
        spend(ms_per_pass + ms_per_extra_token * (_tokens_in(args, kwargs) - 1))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    entry = (ms_per_pass, ms_per_extra_token)
    _added.setdefault(id(model), []).append(entry)
    try:
        yield model
    finally:
        handle.remove()
        _added[id(model)].remove(entry)
        if not _added[id(model)]:
            del _added[id(model)]


def added_costs(model) -> tuple[float, float] | None:
    """(ms per pass, ms per extra token) that the open ``added_cost`` blocks add to ``model``'s passes, or None.
    The grader's sandbox reads it to give the learner's kernel the same costs for its copy of the model."""
    entries = _added.get(id(model))
    return (sum(e[0] for e in entries), sum(e[1] for e in entries)) if entries else None


@contextmanager
def simulated_costs(target, draft, *, target_ms: float = 40.0, target_ms_per_extra_token: float = 4.0,
                    draft_ms: float = 3.0):
    """A simulated clock on which ``target`` and ``draft`` cost what a real pair costs on a 2-core CPU: a target pass
    over k tokens T(k) = ``target_ms`` + ``target_ms_per_extra_token`` × (k − 1) (T(4)/T(1) = 1.3), a draft pass
    ``draft_ms`` (c = 0.075), whatever the models really cost on this machine."""
    with simulated(), added_cost(target, target_ms, target_ms_per_extra_token), added_cost(draft, draft_ms):
        yield


def slowdown_factor() -> float:
    """The factor in ``SPECDEC_TEST_SLOWDOWN`` (1 when unset); a clear error for anything but a number ≥ 1."""
    raw = os.environ.get(SLOWDOWN_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        factor = float("nan")
    if not factor >= 1 or factor == float("inf"):
        raise ValueError(f"{SLOWDOWN_VARIABLE}={raw!r}: give a number ≥ 1 (how many times slower every forward pass of "
                         "a tiny model should run; 1 or unset: as fast as this machine runs it)")
    return factor


def slow_down_as_asked(model):
    """With ``SPECDEC_TEST_SLOWDOWN=N``, make every forward pass of ``model`` take N times as long on the wall clock
    (it busy-waits N − 1 times what the pass took). The simulated clock does not see it: nothing measured under
    ``simulated()`` may change. Returns ``model``."""
    factor = slowdown_factor()
    if factor == 1 or getattr(model, "_test_slowdown", None) == factor:
        return model
    model._test_slowdown = factor  # a deepcopy of the model (a draft copied from it) keeps the hooks and this mark

    def start(module, args):
        module._pass_started = time.perf_counter()

    def finish(module, args, output):
        started = module.__dict__.pop("_pass_started", None)
        if started is not None:
            _busy_wait((module._test_slowdown - 1) * (time.perf_counter() - started))

    model.register_forward_pre_hook(start)
    model.register_forward_hook(finish)
    return model
