"""Grade learners' exercise notebooks: ``python -m specdec_course grade SUBMISSIONS``.

SUBMISSIONS is a folder with either one notebook per learner (learner = file stem; the exercise comes from
``--exercise``, else the notebook's ``metadata.specdec_exercise.generated_from``, else an exercise name inside the
file name) or one folder per learner holding notebooks named like ``exercises/*.ipynb``. Both may be mixed.

The scheme, one CSV row per learner × exercise × task (columns learner, exercise, task, points, max_points, message):

* every code cell tagged ``check`` in the released exercise (exercises/NAME.ipynb) is a task, named after the
  ``## Task N · Title`` heading above it; it is worth ``metadata.nbgrader.points`` (default 1) and passes when its
  ORIGINAL source (from the released exercise, whatever the learner made of it) runs without an error;
* a hidden check (``specdec_course.course.hidden_checks``) runs right after its visible check and has a row of its
  own, "Task N · Title (hidden check)";
* free-text answers (markdown "YOUR ANSWER HERE" cells) are graded by hand with their rubric: a row with empty
  points, max_points the rubric's (``metadata.nbgrader.points``) and "manual: answered (N words)" or "manual: not
  answered", until ``--manual`` merges the scores (``gradebook.py``, which also writes one row per learner and
  feedback files);
* a "(notebook)" row (0 of 0 points) always carries what happened to the notebook as a whole: "ran in a sandbox in
  3.1 s", or the problems: not valid JSON, crashed, timed out, deleted or renamed cells, files changed, too many
  processes; and the cells (not check cells) that raised an error, by id and error name;
* a graded function that delegates its task to the course's own implementation scores 0 on its checks with the
  reason (``integrity.py``: read from the notebook's code, and withheld from the kernel).

Where learner code runs and where verdicts are made: each notebook's cells run, in order, in a fresh kernel inside a
bubblewrap sandbox (``sandbox.py``: read-only system, no network, its own small /tmp as the only writable place, the
submissions and the hidden checks out of sight, memory and time limits, every process killed at the end). A check
cell is NOT run in that kernel: when the run reaches it, the grader runs the released check itself, in its own
process, with a proxy for each learner function it names; the proxy calls the function in the kernel on the check's
inputs and brings the result back as JSON. Expected values and hidden cases are computed in the grader only, so
nothing a learner redefines (checks, hidden checks, torch) changes a verdict. Values a check cell takes from the
notebook's set-up (the real models, traces) are made by the grader too (``SETUP``). Without bwrap (macOS, no user
namespaces) ``grade`` refuses to run unless ``trusted=True`` (``--trusted``): then the kernels run unsandboxed, the
verdicts are still made outside them, and the summary and every "(notebook)" row say so.

A released code cell (check, solution or set-up cell) that is missing from the submission (matched by cell id: a
deleted cell and a cell whose id changed look the same) gives 0 points to the tasks of its section (the code cells
before Task 1 belong to every task) with "deleted or renamed cell ID"; the other tasks are graded. Missing markdown
cells are only reported in the "(notebook)" row (a missing answer cell also on its manual row). A notebook that
cannot run at all (not valid JSON, not a notebook) gets 0 on every task with the reason. One that crashes or hangs
keeps the points of the checks that ran before it stopped; the later ones say why they did not run. The submissions
folder is also hashed before and after each notebook; a file changed there would be put back and reported.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import csv
import io
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "exercises"
NOTEBOOK = "(notebook)"
COLUMNS = ["learner", "exercise", "task", "points", "max_points", "message"]
SETUP = ("target", "draft", "tokenizer", "traces", "trace_path")  # check-cell names the grader makes itself


# --------------------------------------------------------------------------- the released exercise: tasks
@dataclass
class Task:
    name: str                 # "Task 1 · The correction" (+ " (hidden check)")
    grade_id: str             # stable: from the cell id
    kind: str                 # "check", "hidden" or "manual"
    cell_id: str              # the check cell (hidden: the check cell it follows; manual: the answer cell)
    points: float
    source: str = ""          # check: the released source (hidden: empty)
    section: list = field(default_factory=list)  # ids of the released code cells this task depends on


def _source(cell) -> str:
    # exercises._source, repeated: the kernel runner loads this file on its own (no package), so no top-level imports
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def exercise_names(released: Path = RELEASED) -> list[str]:
    return sorted(p.stem for p in released.glob("*.ipynb"))


def resolve_exercise(name: str, released: Path = RELEASED) -> str:
    """A released exercise's name from its name, file name or a unique prefix ("04"); ValueError otherwise."""
    names = exercise_names(released)
    stem = Path(name).stem
    if stem in names:
        return stem
    matches = [n for n in names if n.startswith(stem)]
    if stem and len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown exercise {name!r}; choose one of {', '.join(names)}")


def load_tasks(exercise: str, released: Path = RELEASED) -> list[Task]:
    """The graded tasks of a released exercise, in notebook order."""
    try:
        from .hidden_checks import HIDDEN
    except ImportError:  # a learners' release: no hidden checks
        HIDDEN = {}

    nb = json.loads((released / f"{exercise}.ipynb").read_text())
    hidden = HIDDEN.get(exercise, {})
    tasks, setup, sections, heading = [], [], {}, None
    counts: dict[str, int] = {}
    for cell in nb["cells"]:
        cell_id, text, meta = cell.get("id", ""), _source(cell), cell.get("metadata", {})
        first = text.strip().split("\n")[0] if text.strip() else ""
        if cell["cell_type"] == "markdown" and re.match(r"#+\s*Task\b", first):
            heading = first.lstrip("#").strip()
        code_id = [cell_id] if cell["cell_type"] == "code" else []  # a deleted markdown cell costs no points
        if heading is None:
            setup += code_id
            continue
        section = sections.setdefault(heading, [])  # the same list for every task under this heading
        section += code_id
        if cell["cell_type"] == "code" and "check" in meta.get("tags", []):
            counts[heading] = counts.get(heading, 0) + 1
            name = heading if counts[heading] == 1 else f"{heading} (check {counts[heading]})"
            grade_id = meta.get("nbgrader", {}).get("grade_id", f"check_{cell_id}")
            tasks.append(Task(name, grade_id, "check", cell_id, meta.get("nbgrader", {}).get("points", 1), text, section))
            if cell_id in hidden:
                tasks.append(Task(f"{name} (hidden check)", f"hidden_{cell_id}", "hidden", cell_id, hidden[cell_id][2],
                                  "", section))
        elif cell["cell_type"] == "markdown" and text.strip() == "YOUR ANSWER HERE":
            tasks.append(Task(heading, f"answer_{cell_id}", "manual", cell_id, meta.get("nbgrader", {}).get("points", 0),
                              "", section))
    for task in tasks:  # cells before the first task belong to every task
        task.section = setup + task.section
    return tasks


def released_cell_ids(exercise: str, released: Path = RELEASED) -> list[str]:
    return [c.get("id", "") for c in json.loads((released / f"{exercise}.ipynb").read_text())["cells"]]


# --------------------------------------------------------------------------- finding the submissions
@dataclass
class Submission:
    learner: str
    path: Path | None         # None: no notebook for this exercise
    exercise: str | None      # None: not recognised
    problem: str = ""


def _exercise_from(path: Path, names: list[str]) -> str | None:
    try:
        meta = json.loads(path.read_bytes()).get("metadata", {}).get("specdec_exercise", {})
        stem = Path(meta.get("generated_from", "")).stem
        if stem in names:
            return stem
    except (ValueError, AttributeError, OSError):
        pass
    found = [n for n in names if n in path.stem]
    return found[0] if len(found) == 1 else None


def find_submissions(folder: Path, exercise: str | None = None, released: Path = RELEASED) -> list[Submission]:
    """Every (learner, notebook, exercise) in ``folder``: notebooks at its top, or one folder per learner."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder {folder} does not exist")
    names = exercise_names(released)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            ex = exercise or _exercise_from(entry, names)
            found.append(Submission(entry.stem, entry, ex, "" if ex else "exercise not recognised: give --exercise"))
        elif entry.is_dir():
            notebooks = sorted(p for p in entry.glob("*.ipynb") if not p.name.startswith("."))
            by_name = {p.stem: p for p in notebooks}
            if exercise:
                path = by_name.get(exercise)
                found.append(Submission(entry.name, path, exercise, "" if path else f"no {exercise}.ipynb handed in"))
                continue
            for path in notebooks:
                ex = path.stem if path.stem in names else _exercise_from(path, names)
                found.append(Submission(entry.name, path, ex, "" if ex else f"{path.name}: exercise not recognised"))
    if not found:
        raise ValueError(f"no notebooks in {folder}: give a folder of .ipynb files or of one folder per learner")
    return found


# --------------------------------------------------------------------------- running the checks outside the kernel
@dataclass
class Run:
    """What one grading run shares between notebooks: its folder, the sandbox's settings, the grader's set-up values."""
    folder: Path
    trusted: bool = False
    memory_mb: int = 6144
    hidden: list = field(default_factory=list)   # paths no kernel may see (the submissions, the CSV)
    values: dict = field(default_factory=dict)
    max_processes: int | None = None
    stripped: dict = field(default_factory=dict)  # exercise -> {package file: copy without the graded references}
    notes: list = field(default_factory=list)     # what happened to the notebook being graded, for its "(notebook)" row
    errors: list = field(default_factory=list)    # its cells (not check cells) that raised an error: "c05 (NameError)"

    def withheld(self, exercise: str) -> dict:
        """The package files a kernel grading ``exercise`` sees in place of the originals (integrity.py)."""
        if exercise not in self.stripped:
            from . import integrity

            self.stripped[exercise] = integrity.stripped_sources(exercise, self.folder / "withheld" / exercise)
        return self.stripped[exercise]

    def setup(self, name: str):
        """A value a check cell takes from the notebook's set-up, made here instead (learner code cannot change it)."""
        if name not in self.values:
            if name in ("target", "draft", "tokenizer"):
                from ..models import load_pair

                self.values.update(zip(("target", "draft", "tokenizer"), load_pair(kernels="stock", verbose=False)))
            else:  # the traces of a healthy run and of each fault, on tiny models
                from . import checks

                traces = checks.fault_traces(self.folder / "shared" / "traces")
                self.values.update(traces=traces, trace_path=traces["healthy"])
        return self.values[name]

    def kernel(self, folder: Path, deadline: float, exercise: str):
        from .sandbox import Kernel

        named = {k: self.values[k] for k in ("target", "draft") if k in self.values}
        return Kernel(folder, deadline, sandboxed=not self.trusted, shown=[self.folder / "shared"], hidden=self.hidden,
                      memory_mb=self.memory_mb, named=named, withheld=self.withheld(exercise),
                      max_processes=self.max_processes)


def check_names(source: str) -> tuple[list[str], list[str]]:
    """(names a check cell reads, names it assigns), ``checks`` and builtins left out."""
    read, written = [], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (written if isinstance(node.ctx, ast.Store) else read).append(node.id)
    skip = {"checks", *dir(builtins), *written}
    return [n for n in dict.fromkeys(read) if n not in skip], list(dict.fromkeys(written))


def _message(err: BaseException) -> str:
    from .checks import NotAttempted
    from .integrity import WITHHELD_ERROR

    if isinstance(err, NotAttempted):
        return "not attempted"
    value = " / ".join(line.strip() for line in str(err).strip().split("\n") if line.strip())
    if WITHHELD_ERROR in value:  # the learner's function called a reference the sandbox withholds
        found = re.search(r"(specdec_course\.[\w.]+) is the course's own answer", value)
        return (f"delegates to the course: it calls {found.group(1) if found else 'the course'}'s implementation of "
                "this task, which is withheld while grading; the task needs your own code")
    return f"{type(err).__name__}: {value}"[:300]


def run_check(task: Task, exercise: str, kernel, run: Run) -> tuple[float, str]:
    """(points, message) of one check, run in the grader's process on proxies of the learner's functions."""
    from . import checks, hidden_checks

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the checks' "✓ ..." lines
            if task.kind == "hidden":
                name = hidden_checks.HIDDEN[exercise][task.cell_id][0]
                hidden_checks.run(exercise, task.cell_id, {name: kernel.name(name)})
            else:
                read, written = check_names(task.source)
                namespace = {"checks": checks}
                namespace.update({n: run.setup(n) if n in SETUP else kernel.name(n) for n in read})
                exec(compile(task.source, f"<{task.name}>", "exec"), namespace)  # noqa: S102 - the released check
                for name in written:  # e.g. `measured = checks.check_...`: later cells use it
                    kernel.set(name, namespace[name])
    except Exception as err:  # noqa: BLE001 - any error of a check is the learner's failure; KernelStopped passes
        return 0, _message(err)
    return task.points, "passed"


def run_notebook(submitted: dict, exercise: str, tasks: list[Task], timeout: float, run: Run, folder: Path):
    """Run the notebook's code cells in a kernel and its checks in the grader, in notebook order.
    Returns ({grade_id: (points, message)}, how it stopped or None, the cell it stopped in, seconds)."""
    from .sandbox import KernelStopped

    by_cell: dict[str, list[Task]] = {}
    for task in tasks:
        if task.kind in ("check", "hidden"):
            by_cell.setdefault(task.cell_id, []).append(task)
            for name in check_names(task.source)[0] if task.kind == "check" else []:
                if name in SETUP:
                    run.setup(name)  # made before the clock starts, and known to the kernel by name
    results, stopped, where = {}, None, None
    start = time.monotonic()
    kernel = run.kernel(folder, start + timeout, exercise)
    try:
        kernel.start()
        for cell in submitted["cells"]:
            if cell.get("cell_type") != "code":
                continue
            where = cell.get("id")
            if where in by_cell:
                for task in by_cell.pop(where):
                    results[task.grade_id] = run_check(task, exercise, kernel, run)
            else:
                reply = kernel.execute(_source(cell))  # its errors cost no points (only the checks count): noted
                if reply.get("status") == "error":
                    run.errors.append(f"{where} ({reply.get('ename', 'error')})")
    except KernelStopped as stop:
        stopped = stop
    finally:
        kernel.stop()
    if kernel.refused_processes:
        run.notes.append(f"a cell tried to start more than the sandbox's {kernel.max_processes} processes and was refused")
    return results, stopped, where, time.monotonic() - start


# --------------------------------------------------------------------------- grading one submission
def _row(sub: Submission, task: str, points, max_points, message: str) -> dict:
    return {"learner": sub.learner, "exercise": sub.exercise or "", "task": task, "points": points,
            "max_points": max_points, "message": message}


def _all_zero(sub: Submission, tasks: list[Task], reason: str) -> list[dict]:
    rows = [_row(sub, NOTEBOOK, 0, 0, reason)]
    for task in tasks:
        if task.kind == "manual":
            rows.append(_row(sub, task.name, "", task.points, f"manual: not graded ({reason})"))
        else:
            rows.append(_row(sub, task.name, 0, task.points, f"not graded: {reason}"))
    return rows


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _restore(folder: Path, before: dict) -> list[str]:
    """Put back every file of ``folder`` that changed or vanished; remove new ones. Returns what was changed."""
    changed = []
    now = {p for p in folder.rglob("*") if p.is_file()}
    for path, data in before.items():
        if path not in now or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            changed.append(str(path))
    for path in now - set(before):
        path.unlink()
        changed.append(str(path))
    return changed


def grade_submission(sub: Submission, timeout: float, run: Run, released: Path = RELEASED,
                     guard_folder: Path | None = None) -> list[dict]:
    """The CSV rows of one learner's notebook for one exercise."""
    if sub.exercise is None:
        return [_row(sub, NOTEBOOK, 0, 0, sub.problem)]
    tasks = load_tasks(sub.exercise, released)
    if sub.path is None:
        return _all_zero(sub, tasks, sub.problem)
    try:
        submitted = json.loads(sub.path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        return _all_zero(sub, tasks, f"not valid JSON ({err})")
    if not isinstance(submitted, dict) or not isinstance(submitted.get("cells"), list) or \
            not all(isinstance(c, dict) and "cell_type" in c for c in submitted["cells"]):
        return _all_zero(sub, tasks, "not a Jupyter notebook (no list of cells)")

    present = {c.get("id") for c in submitted["cells"]}
    missing = [c for c in released_cell_ids(sub.exercise, released) if c not in present]
    before = _snapshot(guard_folder) if guard_folder else {}
    run.notes, run.errors = [], []
    with tempfile.TemporaryDirectory(prefix="notebook-", dir=run.folder) as name:
        results, stopped, where, seconds = run_notebook(submitted, sub.exercise, tasks, timeout, run, Path(name))
    changed = _restore(guard_folder, before) if guard_folder else []
    delegated = _delegations(submitted, sub.exercise)

    cells = {c.get("id"): c for c in submitted["cells"]}
    reason = None
    if stopped is not None:
        reason = {"timeout": f"timed out after {timeout:g} s", "dead": "the kernel died (crashed)"}.get(
            stopped.kind, f"could not run ({stopped})") + (f" in cell {where}" if where else "")
    problems = [f"deleted or renamed cell {c}" for c in missing] + ([reason] if reason else [])
    problems += [f"changed {path} in the submissions folder (put back)" for path in changed] + run.notes
    errors = [f"cells that raised an error: {', '.join(run.errors)}"] if run.errors else []
    rows = [_row(sub, NOTEBOOK, 0, 0, "; ".join(dict.fromkeys(problems + errors)) if problems else
                 "; ".join([f"ran {'unsandboxed' if run.trusted else 'in a sandbox'} in {seconds:.1f} s"] + errors))]
    for task in tasks:
        gone = [c for c in task.section if c in missing]
        if task.kind == "manual":
            cell = cells.get(task.cell_id)
            text = _source(cell).strip() if cell else ""
            words = len(text.split())
            message = (f"manual: deleted or renamed cell {task.cell_id}" if cell is None else
                       f"manual: answered ({words} words)" if text and text != "YOUR ANSWER HERE" else "manual: not answered")
            rows.append(_row(sub, task.name, "", task.points, message))
            continue
        reads = [n for n in _graded_names(task, sub.exercise) if n in delegated]
        if gone:
            points, message = 0, "deleted or renamed cell " + ", ".join(gone)
        elif reads:
            points, message = 0, "delegates to the course: " + "; ".join(delegated[n] for n in reads)
        elif task.grade_id not in results:
            points, message = 0, f"not run: {reason}" if reason else "not run"
        else:
            points, message = results[task.grade_id]
        rows.append(_row(sub, task.name, points, task.points, message))
    return rows


def _graded_names(task: Task, exercise: str) -> list[str]:
    """The learner's functions a check or hidden check calls."""
    if task.kind == "hidden":
        from .hidden_checks import HIDDEN

        return [HIDDEN[exercise][task.cell_id][0]]
    return [n for n in check_names(task.source)[0] if n not in SETUP] if task.kind == "check" else []


def _delegations(submitted: dict, exercise: str) -> dict[str, str]:
    """{graded name: reason} for graded functions that, read from the notebook's code cells, delegate their task."""
    from .integrity import delegations

    sources = [_source(c) for c in submitted["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    return delegations(sources, exercise)


# --------------------------------------------------------------------------- the whole folder
class SandboxUnavailable(ValueError):
    """No sandbox on this machine, and the notebooks were not declared trusted."""


def grade(folder, exercise: str | None = None, timeout: float = 300, out="grades.csv", released: Path = RELEASED,
          log=print, trusted: bool = False, memory_mb: int = 6144, max_processes: int | None = None) -> list[dict]:
    """Grade every submission in ``folder``, write the CSV to ``out`` and print a summary table. Returns the rows.
    Each notebook runs in a bubblewrap sandbox; ``trusted=True`` runs them without one (where there is none).
    (``gradebook.grade_class`` adds a class's rubric scores, roster, one-row-per-learner CSV and feedback.)"""
    from .sandbox import unavailable_reason


    if timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if memory_mb < 512:
        raise ValueError(f"--memory-mb must be at least 512 (a kernel with torch needs that much), got {memory_mb}")
    if max_processes is not None and max_processes < 32:
        raise ValueError(f"--max-processes must be at least 32 (a kernel runs a dozen threads before any learner code), "
                         f"got {max_processes}")
    if exercise is not None:
        exercise = resolve_exercise(exercise, released)
    folder = Path(folder).resolve()
    submissions = find_submissions(folder, exercise, released)
    reason = None if trusted else unavailable_reason()
    if reason:
        raise SandboxUnavailable(
            f"{reason}, so learners' notebooks cannot be sandboxed: their code would run with all your rights. "
            "Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; `make bubblewrap` does it where it can), "
            "grade on a Linux machine or container that has it, or pass --trusted if you trust every notebook in "
            f"{folder} (they then run unsandboxed; the verdicts are still made outside them)")
    if trusted:
        log("TRUSTED: the notebooks run WITHOUT a sandbox (--trusted); only grade notebooks you trust this way")
    out = Path(out)
    rows = []
    with tempfile.TemporaryDirectory(prefix="specdec-grade-") as base:
        run = Run(Path(base).resolve(), trusted=trusted, memory_mb=memory_mb, hidden=[folder, out.resolve()],
                  max_processes=max_processes)
        if not trusted:
            from .sandbox import ProcessLimit, default_max_processes

            probe = ProcessLimit(max_processes or default_max_processes())
            probe.close()
            if not probe.how:
                log("WARNING: no limit on how many processes a notebook may start: the grader runs as root and "
                    "cannot make a pids cgroup here (grade as an ordinary user, where RLIMIT_NPROC holds)")
        for index, sub in enumerate(submissions, 1):
            log(f"[{index}/{len(submissions)}] {sub.learner}: {sub.exercise or (sub.path.name if sub.path else '?')}")
            rows += grade_submission(sub, timeout, run, released, guard_folder=folder)
    if trusted:
        for row in rows:
            if row["task"] == NOTEBOOK:
                row["message"] = "TRUSTED, not sandboxed (--trusted): " + row["message"]
    write_rows(rows, out, log)
    log(summary(rows) + ("\n(TRUSTED: not sandboxed)" if trusted else ""))
    return rows


def write_rows(rows: list[dict], out, log=print) -> None:
    """The long CSV: one row per learner × exercise × task."""
    out = Path(out)
    existed = out.exists()
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "points": _number(row["points"]), "max_points": _number(row["max_points"])}
                         for row in rows)
    log(f"wrote {out}" + (" (replaced the previous file)" if existed else ""))


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def summary(rows: list[dict]) -> str:
    """A learner × exercise table of points/max; "+N" counts written answers still to grade by hand."""
    totals: dict[tuple, list] = {}
    for row in rows:
        cell = totals.setdefault((row["learner"], row["exercise"] or "?"), [0, 0, 0])
        if row["points"] != "":
            cell[0] += row["points"]
        elif row["task"] != NOTEBOOK:
            cell[2] += 1
        cell[1] += row["max_points"]
    learners = list(dict.fromkeys(k[0] for k in totals))
    exercises = list(dict.fromkeys(k[1] for k in totals))
    header = ["learner"] + exercises

    def entry(got, most, pending):
        return f"{_number(got)}/{_number(most)}" + (f" +{pending} to grade" if pending else "")

    table = [header] + [[l] + [entry(*totals[(l, e)]) if (l, e) in totals else "-" for e in exercises] for l in learners]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)
