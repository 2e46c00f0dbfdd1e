"""Grade learners' exercise notebooks: ``python -m specdec_course grade SUBMISSIONS``.

SUBMISSIONS is a folder with either one notebook per learner (learner = file stem; the exercise comes from
``--exercise``, else the notebook's ``metadata.specdec_exercise.generated_from``, else an exercise name inside the
file name) or one folder per learner holding notebooks named like ``exercises/*.ipynb``. Both may be mixed.

The scheme, one CSV row per learner × exercise × task (columns learner, exercise, task, points, max_points, message):

* every code cell tagged ``check`` in the released exercise (exercises/NAME.ipynb) is a task, named after the
  ``## Task N · Title`` heading above it; it is worth ``metadata.nbgrader.points`` (default 1) and passes when its
  ORIGINAL source (from the released exercise, whatever the learner made of it) runs without an error;
* a hidden check (``specdec_course.course.hidden_checks``) runs right after its visible check, in the same kernel, and has a
  row of its own, "Task N · Title (hidden check)";
* free-text answers (markdown "YOUR ANSWER HERE" cells) are not auto-graded: a row with empty points, max_points 0
  and "manual: answered (N words)" or "manual: not answered";
* a "(notebook)" row (0 of 0 points) always carries what happened to the notebook as a whole: "ran in 3.1 s", or
  the problems: not valid JSON, crashed, timed out, deleted or renamed cells, writes outside its folder.

A released code cell (check, solution or set-up cell) that is missing from the submission (matched by cell id: a
deleted cell and a cell whose id changed look the same) gives 0 points to the tasks of its section (the code cells
before Task 1 belong to every task) with "deleted or renamed cell ID"; the other tasks are graded. Missing markdown
cells are only reported in the "(notebook)" row (a missing answer cell also on its manual row). A notebook that
cannot run at all (not valid JSON, not a notebook) gets 0 on every task with the reason. One that crashes or hangs
keeps the points of the checks that ran before it stopped; the later ones say why they did not run.

Each notebook runs in a fresh kernel, in a temporary copy, with a time limit; the kernel's HOME, TMPDIR and Jupyter/
IPython/matplotlib folders are inside that temporary folder. An audit hook installed before any learner code refuses
(PermissionError) and records every write, rename, removal or folder creation outside the temporary folder and the
model cache; the submissions folder is also hashed before and after each notebook, and any file changed there is put
back (files created there are removed). Shell commands (``!cmd``, subprocess) escape the hook and meet only that
second guard. The grader is a safety net against honest mistakes and simple tricks (editing or deleting a check
cell), not a sandbox against code written to attack it.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "exercises"
NOTEBOOK = "(notebook)"
COLUMNS = ["learner", "exercise", "task", "points", "max_points", "message"]
GUARD_ID = "specdec-grader-guard"
HIDDEN_PREFIX = "specdec-grader-hidden-"


# --------------------------------------------------------------------------- the released exercise: tasks
@dataclass
class Task:
    name: str                 # "Task 1 · The correction" (+ " (hidden check)")
    grade_id: str             # stable: from the cell id
    kind: str                 # "check", "hidden" or "manual"
    cell_id: str              # the check cell (hidden: the check cell it follows; manual: the answer cell)
    points: float
    source: str = ""          # check: the released source; hidden: the code run after the check cell
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
    from .hidden_checks import HIDDEN

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
                code = (f"from specdec_course.course import hidden_checks as _specdec_hidden\n"
                        f"_specdec_hidden.run({exercise!r}, {cell_id!r}, globals())")
                tasks.append(Task(f"{name} (hidden check)", f"hidden_{cell_id}", "hidden", cell_id, hidden[cell_id][2],
                                  code, section))
        elif cell["cell_type"] == "markdown" and text.strip() == "YOUR ANSWER HERE":
            tasks.append(Task(heading, f"answer_{cell_id}", "manual", cell_id, 0, "", section))
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


# --------------------------------------------------------------------------- preparing and running one notebook
GUARD = r'''
def _specdec_install_guard(allowed, log_path):
    import os, sys, json
    roots = [os.path.realpath(p) for p in allowed]
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    events = {"os.remove": 1, "os.rename": 2, "os.mkdir": 1, "os.rmdir": 1, "os.truncate": 1, "os.chmod": 1,
              "os.chown": 1, "os.link": 2, "os.symlink": 2, "os.utime": 1, "shutil.rmtree": 1, "shutil.copyfile": 2}

    def outside(path):
        if isinstance(path, int) or path is None:
            return None
        path = os.path.realpath(os.fsdecode(os.fspath(path)))
        if any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
            return None
        return path

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & writing)):
                return
            paths = [path]
        elif event in events:
            paths = list(args[:events[event]])
            if event == "os.rename":
                paths = paths[:2]
            if event == "shutil.copyfile":
                paths = paths[1:]
        else:
            return
        for path in paths:
            bad = outside(path)
            if bad:
                os.write(log, (json.dumps({"event": event, "path": bad}) + "\n").encode())
                raise PermissionError(f"the grader does not allow writing outside the notebook's folder: {bad}")

    sys.addaudithook(hook)


_specdec_install_guard(ALLOWED, LOG)
del _specdec_install_guard
'''


def _guard_cell(allowed: list[str], log: str) -> dict:
    code = GUARD.replace("ALLOWED", repr(allowed)).replace("LOG", repr(log)).strip() + "\n"
    return {"cell_type": "code", "id": GUARD_ID, "metadata": {"specdec_grader": True}, "source": code,
            "outputs": [], "execution_count": None}


def prepare(submitted: dict, tasks: list[Task], allowed: list[str], log: str) -> dict:
    """The notebook to run: a guard cell first, the released source in every check cell, hidden checks after them."""
    nb = json.loads(json.dumps(submitted))
    checks = {t.cell_id: t for t in tasks if t.kind == "check"}
    hidden = {t.cell_id: t for t in tasks if t.kind == "hidden"}
    cells = [_guard_cell(allowed, log)]
    for cell in nb["cells"]:
        cell_id = cell.get("id", "")
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if cell_id in checks:
                cell["source"] = checks[cell_id].source
        cells.append(cell)
        if cell.get("cell_type") == "code" and cell_id in hidden:
            cells.append({"cell_type": "code", "id": HIDDEN_PREFIX + cell_id, "metadata": {"specdec_grader": True},
                          "source": hidden.pop(cell_id).source, "outputs": [], "execution_count": None})
    nb["cells"] = cells
    return nb


def _kernel_env(tmp: Path) -> dict:
    from ..storage import cache_dir

    env = dict(os.environ)
    for name, sub in (("HOME", "home"), ("IPYTHONDIR", "home/.ipython"), ("JUPYTER_RUNTIME_DIR", "home/runtime"),
                      ("JUPYTER_DATA_DIR", "home/data"), ("JUPYTER_CONFIG_DIR", "home/config"),
                      ("MPLCONFIGDIR", "home/mpl"), ("TMPDIR", "tmp"), ("XDG_CACHE_HOME", "home/.cache"),
                      # torch records its compiler caches' folders in the environment once it has used them: never
                      # hand the grader's own (outside the kernel's folders) down to a learner's kernel
                      ("TORCHINDUCTOR_CACHE_DIR", "home/.cache/torchinductor"), ("TRITON_CACHE_DIR", "home/.cache/triton")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(tmp / sub)
    env.update(SPECDEC_CACHE_DIR=str(cache_dir()), HF_HUB_OFFLINE="1", SPECDEC_QUICK="1", PYTHONDONTWRITEBYTECODE="1",
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("JUPYTER_PATH", None)
    return env


def _runner_main(argv: list[str]) -> int:
    """In a subprocess: run the prepared notebook cell by cell, saving it after every cell (a kill keeps what ran)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook, out, status_path, pid_path, timeout = argv[0], argv[1], argv[2], argv[3], float(argv[4])
    nb = nbformat.read(notebook, as_version=4)
    status = {"status": "ok", "cell": None}

    def save():
        nbformat.write(nb, out + ".part")
        os.replace(out + ".part", out)
        Path(status_path).write_text(json.dumps(status))

    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3", startup_timeout=120,
                            resources={"metadata": {"path": str(Path(notebook).parent)}})
    with client.setup_kernel(cwd=str(Path(notebook).parent)):
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        Path(pid_path).write_text(str(pid or ""))
        deadline = time.monotonic() + timeout
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.timeout = max(1, int(deadline - time.monotonic()))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                status.update(status="timeout", cell=cell.get("id"))
            except DeadKernelError:
                status.update(status="dead", cell=cell.get("id"))
            except Exception as err:  # noqa: BLE001 - nbclient or a malformed cell: report it, keep what ran
                status.update(status="error", cell=cell.get("id"), detail=f"{type(err).__name__}: {err}"[:300])
            save()
            if status["status"] != "ok":
                break
        save()
    return 0


_RUNNER = ("import importlib.util, sys\n"
           "spec = importlib.util.spec_from_file_location('specdec_grading_runner', sys.argv[1])\n"
           "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
           "spec.loader.exec_module(module)\n"
           "sys.exit(module._runner_main(sys.argv[2:]))\n")


def _kill_group(pid) -> None:
    """Kill the process group led by ``pid`` (a runner or kernel this module started), if it still leads one."""
    try:
        if os.getpgid(int(pid)) == int(pid):
            os.killpg(int(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError, ValueError, TypeError, OSError):
        pass


def execute(prepared: dict, tmp: Path, timeout: float) -> tuple[dict | None, dict, float]:
    """Run ``prepared`` in ``tmp`` in a fresh kernel; (executed notebook or None, status, seconds)."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    notebook, out, status_path, pid_path = work / "submission.ipynb", tmp / "executed.ipynb", tmp / "status.json", tmp / "kernel.pid"
    notebook.write_text(json.dumps(prepared))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, __file__, str(notebook), str(out), str(status_path),
                             str(pid_path), str(timeout)], cwd=work, env=_kernel_env(tmp), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=timeout + 120)  # kernel start-up and shut-down on top of the limit
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        _, stderr = proc.communicate()
        stderr = b"killed by the grader"
    if proc.returncode:  # the runner did not shut its kernel down (the kernel runs in a session of its own)
        _kill_group(pid_path.read_text().strip() if pid_path.exists() else None)
    seconds = time.monotonic() - start
    status = json.loads(status_path.read_text()) if status_path.exists() else {"status": "error", "cell": None}
    if not status_path.exists() or (proc.returncode and status["status"] == "ok"):
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] if stderr else []
        status = {"status": "error", "cell": status.get("cell"), "detail": (tail[0] if tail else f"exit {proc.returncode}")[:300]}
    executed = json.loads(out.read_text()) if out.exists() else None
    return executed, status, seconds


# --------------------------------------------------------------------------- grading one submission
def _row(sub: Submission, task: str, points, max_points, message: str) -> dict:
    return {"learner": sub.learner, "exercise": sub.exercise or "", "task": task, "points": points,
            "max_points": max_points, "message": message}


def _error_of(cell: dict) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            name = output.get("ename", "Error")
            value = " / ".join(line.strip() for line in str(output.get("evalue", "")).strip().split("\n") if line.strip())
            if name == "NotAttempted":
                return "not attempted"
            return f"{name}: {value}"[:300]
    return None


def _all_zero(sub: Submission, tasks: list[Task], reason: str) -> list[dict]:
    rows = [_row(sub, NOTEBOOK, 0, 0, reason)]
    for task in tasks:
        if task.kind == "manual":
            rows.append(_row(sub, task.name, "", 0, f"manual: not graded ({reason})"))
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


def grade_submission(sub: Submission, timeout: float, released: Path = RELEASED, guard_folder: Path | None = None) -> list[dict]:
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
    with tempfile.TemporaryDirectory(prefix="specdec-grade-") as name:
        tmp = Path(name).resolve()
        from ..storage import cache_dir

        log = tmp / "blocked.jsonl"
        allowed = [str(tmp / sub) for sub in ("work", "home", "tmp")] + [str(cache_dir()), "/dev/null"]
        prepared = prepare(submitted, tasks, allowed, str(log))  # the runner's own files in tmp are off limits
        executed, status, seconds = execute(prepared, tmp, timeout)
        blocked = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    changed = _restore(guard_folder, before) if guard_folder else []

    cells = {c.get("id"): c for c in (executed or prepared)["cells"]}
    stopped = {"timeout": f"timed out after {timeout:g} s", "dead": "the kernel died (crashed)",
               "error": f"could not run ({status.get('detail', '')})"}.get(status["status"])
    where = f" in cell {status['cell']}" if status.get("cell") else ""
    problems = [f"deleted or renamed cell {c}" for c in missing]
    if stopped:
        problems.append(stopped + where)
    for item in blocked:
        problems.append(f"tried to write outside its folder: {item['path']} (blocked)")
    for path in changed:
        problems.append(f"changed {path} in the submissions folder (put back)")
    rows = [_row(sub, NOTEBOOK, 0, 0, "; ".join(dict.fromkeys(problems)) or f"ran in {seconds:.1f} s")]
    for task in tasks:
        gone = [c for c in task.section if c in missing]
        if task.kind == "manual":
            cell = cells.get(task.cell_id)
            text = _source(cell).strip() if cell else ""
            words = len(text.split())
            message = (f"manual: deleted or renamed cell {task.cell_id}" if cell is None else
                       f"manual: answered ({words} words)" if text and text != "YOUR ANSWER HERE" else "manual: not answered")
            rows.append(_row(sub, task.name, "", 0, message))
            continue
        cell = cells.get(task.cell_id if task.kind == "check" else HIDDEN_PREFIX + task.cell_id)
        if gone:
            points, message = 0, "deleted or renamed cell " + ", ".join(gone)
        elif cell is None or cell.get("execution_count") is None and not cell.get("outputs"):
            points, message = 0, f"not run: {stopped}{where}" if stopped else "not run"
        else:
            error = _error_of(cell)
            points, message = (0, error) if error else (task.points, "passed")
        rows.append(_row(sub, task.name, points, task.points, message))
    return rows


# --------------------------------------------------------------------------- the whole folder
def grade(folder, exercise: str | None = None, timeout: float = 300, out="grades.csv", released: Path = RELEASED,
          log=print) -> list[dict]:
    """Grade every submission in ``folder``, write the CSV to ``out`` and print a summary table. Returns the rows."""
    if timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if exercise is not None:
        exercise = resolve_exercise(exercise, released)
    folder = Path(folder).resolve()
    submissions = find_submissions(folder, exercise, released)
    rows = []
    for index, sub in enumerate(submissions, 1):
        log(f"[{index}/{len(submissions)}] {sub.learner}: {sub.exercise or (sub.path.name if sub.path else '?')}")
        rows += grade_submission(sub, timeout, released, guard_folder=folder)
    out = Path(out)
    existed = out.exists()
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    log(summary(rows))
    log(f"wrote {out}" + (" (replaced the previous file)" if existed else ""))
    return rows


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def summary(rows: list[dict]) -> str:
    """A learner × exercise table of points/max (manual answers not counted)."""
    totals: dict[tuple, list] = {}
    for row in rows:
        cell = totals.setdefault((row["learner"], row["exercise"] or "?"), [0, 0])
        if row["points"] != "":
            cell[0] += row["points"]
        cell[1] += row["max_points"]
    learners = list(dict.fromkeys(k[0] for k in totals))
    exercises = list(dict.fromkeys(k[1] for k in totals))
    header = ["learner"] + exercises
    table = [header] + [[l] + [f"{_number(totals[(l, e)][0])}/{_number(totals[(l, e)][1])}" if (l, e) in totals else "-"
                               for e in exercises] for l in learners]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)
