"""Answer keys: the visible checks' own calls to ``references``, recorded, so that a learners' copy of the course can
check exercises without the reference answers.

A key is one call ``references.NAME(arguments)`` and what it returned. ``Recorder`` stands in for ``references``
while the visible checks run on the solutions and records every call; ``Replay`` stands in for it in a learners'
copy and answers a call only where the arguments match a recorded call, raising ``MissingAnswerKey`` for any other.

Arguments are matched by a summary, not by their bytes, so that a learner's CPU may compute them a few last bits
apart: integers, strings, shapes and integer tensors must be equal; floats (also each float tensor's values, or for a
large tensor its sums and a sample of its values) within a relative tolerance ``RTOL`` of the larger of the two
values and the tensor's scale. A model argument is summarised by its state dict.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from pathlib import Path

import torch

RTOL, ATOL = 1e-4, 1e-12
SMALL = 256        # tensors up to this many elements are summarised by all their values
SAMPLE = 32        # a larger one: its sums and this many values, evenly spaced
FORMAT = 1
_KIND = type(inspect.Parameter.POSITIONAL_ONLY)  # inspect's enum of parameter kinds


class MissingAnswerKey(LookupError):
    """A call to ``references`` that no recorded key answers (this copy of the course has keys only for the visible
    checks' own calls)."""


class UnknownReference(MissingAnswerKey, AttributeError):
    """``references.NAME`` for a NAME with no keys at all (an AttributeError too, so ``hasattr`` says False)."""


# --------------------------------------------------------------------------- summaries of arguments
def _float(value: float, floats: list, scales: list, scale: float = 0.0):
    if math.isnan(value) or math.isinf(value):
        return ["f", repr(value)]  # matched exactly
    floats.append(float(value))
    scales.append(float(scale))
    return "~"


def _tensor(value: torch.Tensor, floats: list, scales: list) -> list:
    value = value.detach().cpu()
    head = ["t", str(value.dtype).replace("torch.", ""), list(value.shape)]
    if value.is_floating_point() or value.is_complex():
        flat = torch.view_as_real(value).reshape(-1) if value.is_complex() else value.reshape(-1)
        flat = flat.double()
        finite = flat[torch.isfinite(flat)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        if flat.numel() <= SMALL:
            return head + [[_float(float(x), floats, scales, scale) for x in flat.tolist()]]
        abs_sum = float(finite.abs().sum())
        weights = (torch.arange(flat.numel(), dtype=torch.float64) % 97) / 97
        stats = [(float(flat.sum()), abs_sum), (float(flat.abs().sum()), abs_sum),
                 (float((flat * flat).sum()), 0.0), (float((flat * weights).sum()), abs_sum)]
        picked = flat[torch.linspace(0, flat.numel() - 1, SAMPLE).round().long()]
        return head + [[_float(v, floats, scales, s) for v, s in stats],
                       [_float(float(x), floats, scales, scale) for x in picked.tolist()]]
    if value.numel() <= SMALL:
        return head + [value.reshape(-1).tolist()]
    return head + [hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()]


def _walk(value, floats: list, scales: list):
    """The JSON-able skeleton of ``value``: everything matched exactly, with "~" where a float (appended to
    ``floats``, its scale to ``scales``) is matched within the tolerance."""
    if isinstance(value, Summary):
        floats += value.floats
        scales += value.scales
        return value.skeleton
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, float):
        return _float(value, floats, scales)
    if isinstance(value, torch.Tensor):
        return _tensor(value, floats, scales)
    if isinstance(value, torch.nn.Module):
        return ["M", type(value).__name__, [[name, _tensor(t, floats, scales)] for name, t in value.state_dict().items()]]
    if isinstance(value, (list, tuple)):
        return ["L" if isinstance(value, list) else "T", [_walk(v, floats, scales) for v in value]]
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return ["D", [[_walk(k, floats, scales), _walk(v, floats, scales)] for k, v in items]]
    if isinstance(value, range):
        return ["R", value.start, value.stop, value.step]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _walk(value.item(), floats, scales)
    raise TypeError(f"cannot summarise an argument of type {type(value).__name__} for an answer key")


class Summary:
    """A value's skeleton (matched exactly) and its floats with their scales (matched within the tolerance)."""

    def __init__(self, skeleton, floats: list, scales: list):
        self.skeleton, self.floats, self.scales = skeleton, floats, scales

    @classmethod
    def of(cls, value) -> "Summary":
        floats, scales = [], []
        skeleton = _walk(value, floats, scales)
        return cls(skeleton, floats, scales)

    def key(self) -> str:
        return json.dumps(self.skeleton, separators=(",", ":"))

    def distance(self, floats: list, scales: list) -> float | None:
        """The largest relative difference from recorded floats (None: one is outside the tolerance)."""
        worst = 0.0
        for a, b, s, t in zip(self.floats, floats, self.scales, scales):
            size = max(abs(a), abs(b), s, t)
            gap = abs(a - b)
            if gap > RTOL * size + ATOL:
                return None
            worst = max(worst, gap / size if size else 0.0)
        return worst


# --------------------------------------------------------------------------- calls: arguments bound to parameters
def _parameters(fn) -> list:
    """[name, kind, has a default, the default's (skeleton, floats, scales)] for each parameter of ``fn``."""
    rows = []
    for p in inspect.signature(fn).parameters.values():
        has_default = p.default is not inspect.Parameter.empty
        default = Summary.of(p.default) if has_default else None
        rows.append([p.name, int(p.kind), has_default,
                     [default.skeleton, default.floats, default.scales] if has_default else None])
    return rows


def _call_summary(name: str, parameters: list, args: tuple, kwargs: dict) -> Summary:
    """The summary of ``name(*args, **kwargs)`` with every parameter filled in (a default where not given)."""
    signature = inspect.Signature([inspect.Parameter(p, _KIND(kind),
                                                     default=object() if has else inspect.Parameter.empty)
                                   for p, kind, has, _ in parameters])
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"references.{name}: {err}") from None
    rows = []
    for p, _, has, default in parameters:
        rows.append([p, bound.arguments[p] if p in bound.arguments else Summary(*default)])
    return Summary.of([name, rows])


class AnswerKeys:
    """Recorded calls: {function name: its parameters and [(summary key, floats, scales, result)]}, and the constants
    the checks read (``references.DTYPE_BYTES``)."""

    def __init__(self, functions: dict | None = None, constants: dict | None = None):
        self.functions = functions or {}
        self.constants = constants or {}

    def add(self, name: str, fn, args: tuple, kwargs: dict, result) -> None:
        entry = self.functions.setdefault(name, {"parameters": _parameters(fn), "calls": []})
        summary = _call_summary(name, entry["parameters"], args, kwargs)
        key = summary.key()
        for recorded_key, floats, scales, recorded in entry["calls"]:
            if recorded_key == key and summary.distance(floats, scales) is not None:
                if not _same(recorded, result):
                    raise ValueError(f"two calls of references.{name} that the answer keys cannot tell apart give "
                                     "different answers: summarise the arguments more finely")
                return
        entry["calls"].append([key, summary.floats, summary.scales, copy.deepcopy(result)])

    def answer(self, name: str, args: tuple, kwargs: dict):
        entry = self.functions.get(name)
        if entry is None:
            raise UnknownReference(f"references.{name}: this copy of the course has no answer keys for it")
        summary = _call_summary(name, entry["parameters"], args, kwargs)
        key = summary.key()
        found = [(d, result) for recorded_key, floats, scales, result in entry["calls"]
                 if recorded_key == key and (d := summary.distance(floats, scales)) is not None]
        if not found:
            raise MissingAnswerKey(
                f"references.{name} answers only the calls the visible checks make on their own cases, and these "
                "arguments are not one of them (if a function of yours changed the inputs a check gave it, leave them "
                "as they were). In this copy of the course the reference answers are not included: write the "
                "function yourself (the checks compare it with the recorded answers)")
        return copy.deepcopy(min(found, key=lambda row: row[0])[1])

    def count(self) -> int:
        return sum(len(e["calls"]) for e in self.functions.values())

    def save(self, path: Path) -> None:
        torch.save({"format": FORMAT, "functions": self.functions, "constants": self.constants}, path)

    @classmethod
    def load(cls, path: Path) -> "AnswerKeys":
        data = torch.load(path, weights_only=True)
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: answer keys of format {data.get('format')}, this course reads format {FORMAT}")
        return cls(data["functions"], data["constants"])


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            torch.allclose(a.double(), b.double(), rtol=RTOL, atol=ATOL, equal_nan=True)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= RTOL * max(abs(a), abs(b)) + ATOL or (math.isnan(a) and math.isnan(b))
    return a == b


# --------------------------------------------------------------------------- recording and replaying
class Recorder:
    """Stands in for the ``references`` module: passes every call through and records it in ``keys``."""

    def __init__(self, module, keys: AnswerKeys | None = None):
        self._module = module
        self.keys = keys or AnswerKeys()
        self.calls: list = []  # (name, args, kwargs) as called, for the hint variants

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if not callable(value):
            self.keys.constants[name] = copy.deepcopy(value)
            return value

        def recorded(*args, **kwargs):
            before = copy.deepcopy((args, kwargs))
            result = value(*args, **kwargs)
            self.keys.add(name, value, *before, result)
            self.calls.append((name, *before))
            return result

        return recorded


class Replay:
    """Stands in for ``references`` in a learners' copy: ``replay.NAME(...)`` answers a recorded call."""

    def __init__(self, keys: AnswerKeys):
        self.keys = keys

    def __getattr__(self, name: str):
        keys = self.__dict__["keys"]
        if name in keys.constants:
            return copy.deepcopy(keys.constants[name])
        if name not in keys.functions:
            raise UnknownReference(f"references.{name}: not in this copy of the course (it holds answer keys for the "
                                 "visible checks only)")

        def replayed(*args, **kwargs):
            return keys.answer(name, args, kwargs)

        replayed.__name__ = name
        return replayed
