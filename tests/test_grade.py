"""`python -m specdec_course grade`: a folder of learners' notebooks in, a CSV of points per task out.

One grading run over a folder of exercise-04 notebooks (the lightest exercise: no model to load) serves most tests:
solved, half-solved, untouched, crashing, hanging, corrupt, a deleted and a renamed check cell, a check cell edited to
`pass`, and a notebook that writes outside its folder. Notebooks run one at a time.
"""
import csv
import hashlib
import json
from pathlib import Path

import pytest

from specdec_course import exercises, grading
from specdec_course.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = "04_correction_and_the_full_loop"
TIMEOUT = 25
T1, T2, T3 = "Task 1 · The correction", "Task 2 · The sequence after one step", "Task 3 · In your own words"
T1H, T2H = T1 + " (hidden check)", T2 + " (hidden check)"


def _released():
    return json.loads((ROOT / "exercises" / f"{EXERCISE}.ipynb").read_text())


def _solved(stub=()):
    """The released exercise with the solutions filled in, except the cells in ``stub`` (left as released)."""
    nb = _released()
    solution = {c["id"]: "".join(c["source"]) for c in json.loads((ROOT / "solutions" / f"{EXERCISE}.ipynb").read_text())["cells"]}
    for cell in nb["cells"]:
        text = solution[cell["id"]]
        if exercises.BEGIN in text and cell["id"] not in stub:
            cell["source"] = "\n".join(line for line in text.split("\n") if line.strip() not in (exercises.BEGIN, exercises.END))
    return nb


def _cell(nb, cell_id):
    return next(c for c in nb["cells"] if c["id"] == cell_id)


def _hashes(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grade")
    subs = base / "submissions"
    subs.mkdir()
    outside = base / "outside.txt"

    def write(name, nb):
        (subs / f"{name}.ipynb").write_text(json.dumps(nb, indent=1))

    write("solved", _solved())
    half = _solved()
    _cell(half, "c06")["source"] = exercises.strip_solutions(
        "".join(_cell(json.loads((ROOT / "solutions" / f"{EXERCISE}.ipynb").read_text()), "c06")["source"]))
    write("half", half)
    write("untouched", _released())
    crash = _solved()
    _cell(crash, "c06")["source"] = "import os\nos._exit(1)\n"
    write("crash", crash)
    hang = _solved()
    _cell(hang, "c06")["source"] = "import time\ntime.sleep(3600)\n"
    write("hang", hang)
    (subs / "corrupt.ipynb").write_text('{"cells": [ this is not json')
    deleted = _solved()
    deleted["cells"] = [c for c in deleted["cells"] if c["id"] != "c07"]
    write("deleted", deleted)
    renamed = _solved()
    _cell(renamed, "c04")["id"] = "my-own-id"
    write("renamed", renamed)
    cheat = _released()
    _cell(cheat, "c03")["source"] = "def greedy_correction(p, n):\n    return 0\n"
    _cell(cheat, "c04")["source"] = "pass\n"
    _cell(cheat, "c07")["source"] = "pass\n"
    write("cheat", cheat)
    writer = _solved()
    attempts = (f"for path in [{str(subs / 'evil.txt')!r}, {str(outside)!r}, {str(subs / 'writer.ipynb')!r}]:\n"
                "    try:\n        open(path, 'w').write('x')\n    except PermissionError as err:\n        print(err)\n"
                f"import os\nos.system('echo x > {subs / 'shell.txt'}')\n")
    writer["cells"].insert(2, {"cell_type": "code", "id": "w1", "metadata": {}, "source": attempts, "outputs": [],
                               "execution_count": None})
    write("writer", writer)

    before = _hashes(subs)
    lines = []
    rows = grading.grade(subs, exercise="04", timeout=TIMEOUT, out=base / "grades.csv", log=lines.append)
    with open(base / "grades.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    return {"rows": rows, "csv": written, "before": before, "after": _hashes(subs), "outside": outside, "subs": subs,
            "log": "\n".join(lines)}


def _by_task(graded, learner):
    return {r["task"]: (r["points"], r["max_points"], r["message"]) for r in graded["csv"] if r["learner"] == learner}


def _points(graded, learner):
    rows = _by_task(graded, learner)
    return {task: float(p) for task, (p, _, _) in rows.items() if task != "(notebook)" and p != ""}


def test_every_submitted_file_is_unchanged_byte_for_byte(graded):
    assert graded["after"] == graded["before"]
    assert not graded["outside"].exists()


def test_csv_has_a_row_per_learner_and_task(graded):
    assert list(graded["csv"][0]) == grading.COLUMNS
    learners = {r["learner"] for r in graded["csv"]}
    assert learners == {"solved", "half", "untouched", "crash", "hang", "corrupt", "deleted", "renamed", "cheat", "writer"}
    for learner in learners:
        assert set(_by_task(graded, learner)) == {"(notebook)", T1, T1H, T2, T2H, T3}
    assert all(r["exercise"] == EXERCISE for r in graded["csv"])
    assert "solved" in graded["log"] and "4/4" in graded["log"] and "wrote" in graded["log"]


def test_solution_full_marks_untouched_zero_half_solved_half(graded):
    assert _points(graded, "solved") == {T1: 1, T1H: 1, T2: 1, T2H: 1}
    assert _by_task(graded, "solved")[T1][2] == "passed"
    assert _by_task(graded, "solved")[T3][:2] == ("", "0")
    assert _by_task(graded, "solved")[T3][2].startswith("manual: answered (")
    assert _points(graded, "untouched") == {T1: 0, T1H: 0, T2: 0, T2H: 0}
    assert _by_task(graded, "untouched")[T1][2] == "not attempted"
    assert _by_task(graded, "untouched")[T3][2] == "manual: not answered"
    assert _points(graded, "half") == {T1: 1, T1H: 1, T2: 0, T2H: 0}


def test_crash_and_hang_keep_the_points_before_them(graded):
    for learner, reason in (("crash", "the kernel died"), ("hang", f"timed out after {TIMEOUT} s")):
        rows = _by_task(graded, learner)
        assert _points(graded, learner) == {T1: 1, T1H: 1, T2: 0, T2H: 0}, rows
        assert reason in rows["(notebook)"][2] and "c06" in rows["(notebook)"][2]
        assert rows[T2][2].startswith("not run: " + reason)


def test_corrupt_notebook_is_graded_zero_with_the_reason(graded):
    rows = _by_task(graded, "corrupt")
    assert "not valid JSON" in rows["(notebook)"][2]
    assert _points(graded, "corrupt") == {T1: 0, T1H: 0, T2: 0, T2H: 0}
    assert rows[T1][1] == "1" and "not valid JSON" in rows[T1][2]


def test_deleted_or_renamed_check_cell_gives_zero_for_its_task_only(graded):
    deleted, renamed = _by_task(graded, "deleted"), _by_task(graded, "renamed")
    assert _points(graded, "deleted") == {T1: 1, T1H: 1, T2: 0, T2H: 0}
    assert deleted[T2][2] == deleted[T2H][2] == "deleted or renamed cell c07"
    assert "deleted or renamed cell c07" in deleted["(notebook)"][2]
    assert _points(graded, "renamed") == {T1: 0, T1H: 0, T2: 1, T2H: 1}
    assert renamed[T1][2] == "deleted or renamed cell c04"


def test_a_check_cell_edited_to_pass_still_runs_the_released_check(graded):
    rows = _by_task(graded, "cheat")
    assert _points(graded, "cheat") == {T1: 0, T1H: 0, T2: 0, T2H: 0}
    assert rows[T1][2].startswith("CheckFailed: tau=1, n=0: expected token")
    assert rows[T2][2] == "not attempted"


def test_writes_outside_the_folder_are_blocked_or_put_back_and_reported(graded):
    rows = _by_task(graded, "writer")
    message = rows["(notebook)"][2]
    subs = graded["subs"]
    for path in (subs / "evil.txt", graded["outside"], subs / "writer.ipynb"):
        assert f"tried to write outside its folder: {path.resolve()} (blocked)" in message
    assert f"changed {subs / 'shell.txt'} in the submissions folder (put back)" in message
    assert not (subs / "evil.txt").exists() and not (subs / "shell.txt").exists()
    assert _points(graded, "writer") == {T1: 1, T1H: 1, T2: 1, T2H: 1}  # the tasks themselves are still graded


# --------------------------------------------------------------------------- no notebooks run below
def test_tasks_come_from_the_released_check_cells():
    tasks = grading.load_tasks(EXERCISE)
    assert [(t.name, t.kind, t.points) for t in tasks] == [
        (T1, "check", 1), (T1H, "hidden", 1), (T2, "check", 1), (T2H, "hidden", 1), (T3, "manual", 0)]
    assert tasks[0].grade_id == "check_c04" and "check_greedy_correction" in tasks[0].source
    for name in grading.exercise_names():
        checks = [t for t in grading.load_tasks(name) if t.kind == "check"]
        assert checks and all(t.name.startswith("Task") for t in checks), name


def test_generated_exercises_carry_nbgrader_metadata():
    nb = exercises.make_exercise(json.loads((ROOT / "solutions" / f"{EXERCISE}.ipynb").read_text()), f"{EXERCISE}.ipynb")
    assert _cell(nb, "c04")["metadata"]["nbgrader"] == {"grade": True, "solution": False, "locked": True, "points": 1,
                                                        "grade_id": "check_c04", "schema_version": 3}
    assert _cell(nb, "c03")["metadata"]["nbgrader"]["solution"] is True
    assert _cell(nb, "c09")["metadata"]["nbgrader"]["grade"] is False


def test_submissions_found_per_file_and_per_learner_folder(tmp_path):
    released = _released()
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / f"{EXERCISE}.ipynb").write_text(json.dumps(released))
    (tmp_path / "ann" / "scratch.ipynb").write_text("{}")
    (tmp_path / "ben.ipynb").write_text(json.dumps(released))              # recognised from its metadata
    (tmp_path / "cid_03_acceptance_rule.ipynb").write_text("not json")     # recognised from its file name
    (tmp_path / "dee.ipynb").write_text("{}")                              # not recognised
    found = {(s.learner, s.exercise) for s in grading.find_submissions(tmp_path)}
    assert found == {("ann", EXERCISE), ("ann", None), ("ben", EXERCISE), ("cid_03_acceptance_rule", "03_acceptance_rule"),
                     ("dee", None)}
    forced = grading.find_submissions(tmp_path, "05_kv_caching")
    assert {(s.learner, s.exercise, s.path is None) for s in forced} >= {("ann", "05_kv_caching", True),
                                                                           ("ben", "05_kv_caching", False)}
    assert grading.resolve_exercise("04") == EXERCISE


@pytest.mark.parametrize("argv, error", [
    (["grade", "/no/such/folder"], "does not exist"),
    (["grade", "{tmp}", "--exercise", "99_nothing"], "unknown exercise"),
    (["grade", "{tmp}", "--timeout", "0"], "--timeout must be a positive"),
    (["grade", "{tmp}"], "no notebooks in"),
])
def test_bad_command_line_is_a_clear_error(tmp_path, capsys, argv, error):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert error in capsys.readouterr().err
