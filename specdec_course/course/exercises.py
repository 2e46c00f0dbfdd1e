"""Make exercises/ from solutions/: the solutions are the only source.

In a solution notebook, code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes
``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (markdown: ``YOUR ANSWER HERE``), and all
outputs are cleared. Each generated notebook records a hash of its own content, so a file a
learner has edited is never overwritten silently: it is kept as a backup first.

    python -m specdec_course exercises          # regenerate exercises/
    python -m specdec_course exercises --check  # fail if exercises/ is out of date
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_CODE = ["# YOUR CODE HERE", "raise NotImplementedError()"]
STUB_MARKDOWN = ["YOUR ANSWER HERE"]
ROOT = Path(__file__).resolve().parents[2]


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _as_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def strip_solutions(text: str, *, markdown: bool = False, where: str = "") -> str:
    """Replace each BEGIN/END SOLUTION block with a stub at the marker's indentation."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(text.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}: line {number}: {BEGIN} inside another solution block")
            inside, indent = True, re.match(r"\s*", line).group(0)
            out += [indent + stub for stub in (STUB_MARKDOWN if markdown else STUB_CODE)]
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}: line {number}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def _content_hash(nb: dict) -> str:
    body = copy.deepcopy(nb)
    body.get("metadata", {}).pop("specdec_exercise", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


RUBRIC = re.compile(r"Rubric \((\d+) points?\)")


def _mark_for_nbgrader(cell: dict, *, solution: bool, rubric_points: int | None = None) -> None:
    """nbgrader's cell metadata, so that nbgrader's generate_assignment and autograde accept the notebook:

    * a code cell the learner fills in: an autograded answer (solution, no points of its own);
    * an answer in words: a manually graded answer worth its rubric's points ("Rubric (N points)" in the solution);
    * a check cell: autograder tests worth ``nbgrader.points`` (set in the solution notebook; default 1), locked;
    * every other cell (set-up code, task text): read-only. Locked cells cannot be deleted or edited in Jupyter."""
    meta = cell.setdefault("metadata", {})
    previous = meta.get("nbgrader", {})
    base = {"grade_id": f"cell_{cell.get('id')}", "schema_version": 3}
    if solution and cell["cell_type"] == "markdown":
        if rubric_points is None:
            raise ValueError(f"cell {cell.get('id')}: an answer in words needs 'Rubric (N points)' in its solution")
        meta["nbgrader"] = {**base, "grade_id": f"answer_{cell.get('id')}", "solution": True, "grade": True,
                            "locked": False, "points": rubric_points}
    elif solution:
        meta["nbgrader"] = {**base, "grade_id": f"solution_{cell.get('id')}", "solution": True, "grade": False,
                            "locked": False}
    elif cell["cell_type"] == "code" and "check" in meta.get("tags", []):
        meta["nbgrader"] = {**base, "grade_id": f"check_{cell.get('id')}", "solution": False, "grade": True,
                            "locked": True, "points": previous.get("points", 1)}
    else:
        meta["nbgrader"] = {**base, "solution": False, "grade": False, "locked": True}
    if meta["nbgrader"]["locked"]:
        meta["deletable"], meta["editable"] = False, False
    else:
        meta.pop("deletable", None), meta.pop("editable", None)


def make_exercise(solution: dict, name: str) -> dict:
    """The exercise notebook for one solution notebook (outputs cleared, solutions stubbed)."""
    nb = copy.deepcopy(solution)
    stubbed = 0
    for index, cell in enumerate(nb["cells"]):
        text = _source(cell)
        rubric = RUBRIC.search(text)
        if BEGIN in text:
            stubbed += 1
            text = strip_solutions(text, markdown=cell["cell_type"] == "markdown", where=f"{name} cell {index}")
        _mark_for_nbgrader(cell, solution=BEGIN in _source(cell), rubric_points=int(rubric.group(1)) if rubric else None)
        cell["source"] = _as_lines(text)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    if stubbed == 0:
        raise ValueError(f"{name}: no '{BEGIN}' block, so the exercise would give the answers away")
    nb.setdefault("metadata", {})["specdec_exercise"] = {"generated_from": f"solutions/{name}",
                                                         "note": "generated by `python -m specdec_course exercises`; edit solutions/ instead"}
    nb["metadata"]["specdec_exercise"]["content_hash"] = _content_hash(nb)
    return nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def edited_by_hand(path: Path) -> bool:
    """True if ``path`` is not exactly what this command wrote (a learner worked in it)."""
    try:
        nb = json.loads(path.read_text())
        recorded = nb["metadata"]["specdec_exercise"]["content_hash"]
    except (ValueError, KeyError, TypeError):
        return True
    return recorded != _content_hash(nb)


def generate(solutions: Path = ROOT / "solutions", exercises: Path = ROOT / "exercises", *, check: bool = False,
             verbose: bool = True) -> list[str]:
    """Write (or, with ``check``, only compare) every exercise. Returns the problems / changes found."""
    sources = sorted(solutions.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no solution notebooks in {solutions}")
    report = []
    expected_names = set()
    for source in sources:
        expected_names.add(source.name)
        text = _dump(make_exercise(json.loads(source.read_text()), source.name))
        target = exercises / source.name
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        if check:
            report.append(f"exercises/{source.name} is {'missing' if current is None else 'out of date'}")
            continue
        if current is not None and edited_by_hand(target):
            backup = exercises / ".backup" / f"{target.stem}.{time.strftime('%Y%m%d-%H%M%S')}.ipynb"
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, backup)
            report.append(f"exercises/{source.name} had your own edits: kept a copy in {backup.relative_to(exercises.parent)}")
        exercises.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        report.append(f"wrote exercises/{source.name}")
    for stray in sorted(exercises.glob("*.ipynb")):
        if stray.name not in expected_names:
            report.append(f"exercises/{stray.name} has no solution in solutions/ (left as it is)")
    if verbose:
        print("\n".join(report) if report else "exercises/ is up to date")
    return report
