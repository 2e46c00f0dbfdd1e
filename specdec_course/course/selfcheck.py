"""A learner's own progress: ``python -m specdec_course check [EXERCISE ...]``.

Runs each of the learner's exercise notebooks (default: every notebook in ``exercises/``) from the top in a fresh
kernel of this environment, with no sandbox (the notebooks are the learner's own), as "Restart and run all" would but
going on past a failed check, and never writing the notebook file. Each task's check cell ends as

* passed: it ran without an error;
* failed: it raised one; the first line or so of the check's message is shown as the hint;
* not attempted: the task's function still raises NotImplementedError;
* not run: a cell above it in the same task (or in the set-up cells before Task 1) failed, or the kernel stopped.

Tasks answered in words are listed too (answered or not) but not checked. Only the visible checks run: in the full
course the hidden checks are the grader's, and a learners' copy has none.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .grading import exercise_names, load_tasks, resolve_exercise

HINT_CHARS = 150
TASK_CHARS = 60


@dataclass
class Result:
    exercise: str
    task: str
    status: str        # passed, failed, not attempted, not run, written
    hint: str = ""
    points: float = 0  # the task's points (0 for a written answer: the instructor marks it)
    kind: str = "check"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def hint_of(error: dict) -> str:
    """The first line or so of a check's message (and its "hint:" line), or the error's name and first line."""
    lines = [line.strip() for line in str(error.get("evalue", "")).split("\n") if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text += " " + lines[1]
    if error.get("ename") not in ("CheckFailed", "NotAttempted"):
        text = f"{error.get('ename', 'error')}: {text}"
    hint = next((line for line in lines[1:] if line.startswith("hint:")), "")
    text = text if len(text) <= HINT_CHARS else text[:HINT_CHARS - 1] + "…"
    return text + (f" ({hint})" if hint and len(hint) <= HINT_CHARS else "")


def _error(cell) -> dict | None:
    return next((dict(o) for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def run_exercise(path: Path, exercise: str, timeout: float) -> list[Result]:
    """Run one notebook of the learner's (read, never written) and judge each of its tasks."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    tasks = load_tasks(exercise, path.parent)
    nb = nbformat.read(path, as_version=4)
    order = {cell.get("id"): index for index, cell in enumerate(nb.cells)}
    checks = {t.cell_id: t for t in tasks if t.kind == "check"}
    failed: dict[str, dict] = {}   # code cell id -> its error
    outcome: dict[str, tuple[str, str]] = {}
    stopped = None
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    with client.setup_kernel(stderr=subprocess.DEVNULL):  # the kernel's own notices; cells' output comes by message
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            cell_id = cell.get("id")
            task = checks.get(cell_id)
            if task is not None:
                above = [c for c in task.section if c in failed and order.get(c, index) < index and c not in checks]
                if above:
                    error = failed[above[0]]
                    if error.get("ename") == "NotImplementedError":
                        outcome[cell_id] = ("not attempted", "")
                    else:
                        outcome[cell_id] = ("not run", f"cell {above[0]} above it failed: {hint_of(error)}")
                    continue
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                stopped = f"cell {cell_id} ran past the {timeout:g} s a cell may take"
            except DeadKernelError:
                stopped = f"the kernel died in cell {cell_id}"
            if stopped:
                break
            error = _error(cell)
            if error is not None:
                failed[cell_id] = error
            if task is not None:
                if error is None:
                    outcome[cell_id] = ("passed", "")
                elif error.get("ename") == "NotAttempted":
                    outcome[cell_id] = ("not attempted", "")
                else:
                    outcome[cell_id] = ("failed", hint_of(error))
    results = []  # (cell index, result), in notebook order
    for task in tasks:
        if task.kind == "check":
            status, hint = outcome.get(task.cell_id, ("not run", stopped or "not reached"))
            results.append((order[task.cell_id], Result(exercise, task.name, status, hint, task.points)))
    for index, heading, text in written_answers(nb):
        answered = bool(text) and text != "YOUR ANSWER HERE"
        results.append((index, Result(exercise, heading, "written", f"answered ({len(text.split())} words): your "
                                      "instructor reads it" if answered else "not answered yet", 0, "manual")))
    return [result for _, result in sorted(results, key=lambda row: row[0])]


def written_answers(nb) -> list[tuple[int, str, str]]:
    """(cell index, task heading, text) of each answer in words: a markdown cell that was "YOUR ANSWER HERE" in the
    exercise (nbgrader's metadata says so, whatever the learner wrote in it)."""
    found, heading = [], ""
    for index, cell in enumerate(nb.cells):
        text = _source(cell).strip()
        if cell.cell_type != "markdown":
            continue
        first = text.split("\n")[0] if text else ""
        if first.startswith("#") and first.lstrip("#").strip().startswith("Task"):
            heading = first.lstrip("#").strip()
        elif cell.get("metadata", {}).get("nbgrader", {}).get("solution") or text == "YOUR ANSWER HERE":
            found.append((index, heading, text))
    return found


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def table(results: list[Result]) -> str:
    """The progress table, then each exercise's points and the count of checks passed."""
    rows, last = [("exercise", "task", "result", "hint")], None
    for r in results:
        task = r.task if len(r.task) <= TASK_CHARS else r.task[:TASK_CHARS - 1] + "…"
        rows.append((r.exercise if r.exercise != last else "", task, r.status, r.hint))
        last = r.exercise
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + ("  " + row[3] if row[3] else "")
             for row in rows]
    lines = [line.rstrip() for line in lines]
    lines.append("")
    checks = [r for r in results if r.kind == "check"]
    for exercise in dict.fromkeys(r.exercise for r in results):
        mine = [r for r in checks if r.exercise == exercise]
        written = [r for r in results if r.exercise == exercise and r.kind == "manual"]
        got = sum(r.points for r in mine if r.status == "passed")
        note = f"; {len(written)} written answer{'s' if len(written) != 1 else ''} for your instructor" if written else ""
        lines.append(f"{exercise}: {_number(got)} of {_number(sum(r.points for r in mine))} points "
                     f"({sum(r.status == 'passed' for r in mine)} of {len(mine)} checks passed{note})")
    lines.append("")
    lines.append(f"{sum(r.status == 'passed' for r in checks)} of {len(checks)} checks passed")
    return "\n".join(lines)


def check(names=None, folder="exercises", timeout: float = 600, log=print) -> list[Result]:
    """Run the learner's exercises ``names`` (names, file names or number prefixes; default: all) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder} here: run this in the course's folder (the one holding "
                                "exercises/), or give --folder")
    if not exercise_names(folder):
        raise ValueError(f"{folder} holds no exercise notebooks (*.ipynb)")
    if timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    chosen = list(dict.fromkeys(resolve_exercise(name, folder) for name in names)) if names else exercise_names(folder)
    results = []
    for number, exercise in enumerate(chosen, 1):
        path = folder / f"{exercise}.ipynb"
        start = time.monotonic()
        log(f"[{number}/{len(chosen)}] running {path} ...")
        try:
            mine = run_exercise(path, exercise, timeout)
        except (ValueError, KeyError, TypeError) as err:  # not a notebook we can read
            mine = [Result(exercise, "(notebook)", "not run", f"could not read {path.name}: {err}", kind="notebook")]
        results += mine
        done = sum(r.status == "passed" for r in mine if r.kind == "check")
        log(f"      {done} of {sum(r.kind == 'check' for r in mine)} checks passed ({time.monotonic() - start:.0f} s)")
    log("")
    log(table(results))
    return results


def main(names=None, folder="exercises", timeout: float = 600) -> int:
    check(names, folder=folder, timeout=timeout)
    return 0
