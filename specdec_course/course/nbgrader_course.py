"""An nbgrader course made from solutions/: ``python -m specdec_course nbgrader COURSE_DIR [EXERCISE ...]``.

nbgrader (https://nbgrader.readthedocs.io) keeps a class's assignments in a course folder: the instructor's
version of each notebook in ``source/<assignment>/``, from which ``nbgrader generate_assignment`` makes what the
learners get and ``nbgrader autograde`` grades what they hand in (``submitted/<student>/<assignment>/``). This
writes that folder for our exercises:

* ``source/<exercise>/<exercise>.ipynb``: the solution notebook (outputs cleared) with nbgrader's cell metadata,
  the same as the exercise's (``exercises._mark_for_nbgrader``). Solution blocks use nbgrader's own markers, so
  ``generate_assignment`` turns it into exactly our exercise;
* each check cell that has a hidden check carries it as nbgrader hidden tests (``### BEGIN HIDDEN TESTS``), so the
  learners' copy shows only the visible check; the cell is worth the check's points plus the hidden check's.
  nbgrader scores the two together, all or nothing, and runs them in the learner's kernel; our ``grade`` scores
  them apart and runs every check outside the kernel, in a sandbox with the course's answers withheld;
* ``nbgrader_config.py``: the course id and a time limit per cell.
"""
from __future__ import annotations

import json
from pathlib import Path

from .exercises import BEGIN, ROOT, _as_lines, _dump, _mark_for_nbgrader, _source, RUBRIC
from .grading import resolve_exercise

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CONFIG = '''c = get_config()  # noqa: F821 - nbgrader's config loader defines it
c.CourseDirectory.course_id = "specdec-course"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
c.ExecutePreprocessor.timeout = {timeout}
c.Execute.timeout = {timeout}
'''
MARK = ".specdec-nbgrader"  # a folder this command wrote, so that it may write there again


def hidden_test(exercise: str, cell_id: str) -> str:
    """The hidden-test block of one check cell: the course's hidden check on the learner's function."""
    return "\n".join([HIDDEN_BEGIN, "from specdec_course.course import hidden_checks",
                      f"hidden_checks.run({exercise!r}, {cell_id!r}, globals())", HIDDEN_END])


def source_notebook(exercise: str, solutions: Path = ROOT / "solutions") -> dict:
    """The instructor's version of ``exercise`` for nbgrader's source/ folder."""
    from .hidden_checks import HIDDEN

    nb = json.loads((solutions / f"{exercise}.ipynb").read_text())
    hidden = HIDDEN.get(exercise, {})
    for cell in nb["cells"]:
        text = _source(cell)
        rubric = RUBRIC.search(text)
        _mark_for_nbgrader(cell, solution=BEGIN in text, rubric_points=int(rubric.group(1)) if rubric else None)
        meta = cell["metadata"]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if cell.get("id") in hidden and meta["nbgrader"].get("grade"):
                meta["nbgrader"]["points"] += hidden[cell["id"]][2]
                cell["source"] = _as_lines(text.rstrip("\n") + "\n" + hidden_test(exercise, cell["id"]))
        meta.pop("execution", None)
    nb["metadata"].pop("specdec_exercise", None)
    return nb


def write_course(folder, exercises: list[str] | None = None, *, timeout: int = 900, log=print) -> list[Path]:
    """Write (or rewrite) the nbgrader course folder ``folder`` for ``exercises`` (default: all)."""
    from .grading import exercise_names

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file: give a folder for the nbgrader course")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARK).exists():
        raise ValueError(f"{folder} already holds files that this command did not write: give a new or empty folder "
                         "(nothing in it is overwritten)")
    names = [resolve_exercise(name) for name in exercises] if exercises else exercise_names()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARK).write_text("an nbgrader course written by `python -m specdec_course nbgrader`\n")
    (folder / "nbgrader_config.py").write_text(CONFIG.format(timeout=timeout))
    written = []
    for name in names:
        path = folder / "source" / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(source_notebook(name)))
        written.append(path)
    log(f"wrote an nbgrader course in {folder}: source/ has {', '.join(names)}\n"
        f"next, in {folder}: nbgrader generate_assignment EXERCISE; learners' notebooks go to "
        "submitted/STUDENT/EXERCISE/; then nbgrader autograde EXERCISE")
    return written
