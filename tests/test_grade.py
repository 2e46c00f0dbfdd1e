"""`python -m specdec_course grade`: a folder of learners' notebooks in, a CSV of points per task out.

One grading run over a folder of exercise-08 notebooks (light: tiny random models only, no real model to load) serves most tests:
solved, half-solved, untouched, crashing, hanging, corrupt, a deleted and a renamed check cell, a check cell edited to
`pass`, and a notebook that writes outside its folder. Notebooks run one at a time.
"""
import csv
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from specdec_course.course import exercises, grading
from specdec_course.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = "08_training_a_draft_model"
LIMIT = 600  # seconds a notebook may run: far more than any of these needs, on any machine
T1, T2, T3 = "Task 1 · Greedy agreement, teacher-forced", "Task 2 · Expected tokens per step", "Task 3 · The distillation loss"
T2H, T3H, T4 = T2 + " (hidden check)", T3 + " (hidden check)", "Task 4 · In your own words"
ALL = {T1: 1, T2: 1, T2H: 1, T3: 1, T3H: 1}
NONE = dict.fromkeys(ALL, 0)
BEFORE_T3 = {T1: 1, T2: 1, T2H: 1, T3: 0, T3H: 0}


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
    _cell(half, "c09")["source"] = exercises.strip_solutions(
        "".join(_cell(json.loads((ROOT / "solutions" / f"{EXERCISE}.ipynb").read_text()), "c09")["source"]))
    write("half", half)
    write("untouched", _released())
    crash = _solved()
    _cell(crash, "c09")["source"] = "import os\nos._exit(1)\n"
    write("crash", crash)
    (subs / "corrupt.ipynb").write_text('{"cells": [ this is not json')
    deleted = _solved()
    deleted["cells"] = [c for c in deleted["cells"] if c["id"] not in ("c10", "c02")]  # a check cell, a heading
    write("deleted", deleted)
    renamed = _solved()
    _cell(renamed, "c04")["id"] = "my-own-id"
    write("renamed", renamed)
    cheat = _released()
    _cell(cheat, "c03")["source"] = "def draft_agreement(draft, input_ids, target_tokens):\n    return 0.0\n"
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

    # a notebook that hangs is graded on its own, with a limit set from how long the solved notebook took on this
    # machine: twice that, so the verdicts are the same on a fast machine and a slow one
    late = base / "late"
    late.mkdir()
    hang = _solved()
    _cell(hang, "c09")["source"] = "import time\ntime.sleep(3600)\n"
    (late / "hang.ipynb").write_text(json.dumps(hang, indent=1))

    before = {**_hashes(subs), **_hashes(late)}
    lines = []
    rows = grading.grade(subs, exercise="08", timeout=LIMIT, out=base / "grades.csv", log=lines.append)
    solved = next(r for r in rows if r["learner"] == "solved" and r["task"] == grading.NOTEBOOK)["message"]
    took = re.fullmatch(r"ran in ([0-9.]+) s", solved)
    assert took, f"the solved notebook: {solved}"
    hang_limit = math.ceil(2 * float(took.group(1)))
    rows += grading.grade(late, exercise="08", timeout=hang_limit, out=base / "late.csv", log=lines.append)
    written = []
    for name in ("grades.csv", "late.csv"):
        with open(base / name, newline="") as handle:
            written += list(csv.DictReader(handle))
    return {"rows": rows, "csv": written, "before": before, "after": {**_hashes(subs), **_hashes(late)},
            "outside": outside, "subs": subs, "log": "\n".join(lines), "hang_limit": hang_limit}


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
        assert set(_by_task(graded, learner)) == {"(notebook)", T4, *ALL}
    assert all(r["exercise"] == EXERCISE for r in graded["csv"])
    assert "solved" in graded["log"] and "5/5" in graded["log"] and "wrote" in graded["log"]


def test_solution_full_marks_untouched_zero_half_solved_half(graded):
    assert _points(graded, "solved") == ALL
    assert _by_task(graded, "solved")[T1][2] == "passed"
    assert _by_task(graded, "solved")[T4][:2] == ("", "0")
    assert _by_task(graded, "solved")[T4][2].startswith("manual: answered (")
    assert _points(graded, "untouched") == NONE
    assert _by_task(graded, "untouched")[T1][2] == "not attempted"
    assert _by_task(graded, "untouched")[T4][2] == "manual: not answered"
    assert _points(graded, "half") == BEFORE_T3


def test_crash_and_hang_keep_the_points_before_them(graded):
    for learner, reason in (("crash", "the kernel died"), ("hang", f"timed out after {graded['hang_limit']} s")):
        rows = _by_task(graded, learner)
        assert _points(graded, learner) == BEFORE_T3, rows
        assert reason in rows["(notebook)"][2] and "c09" in rows["(notebook)"][2]
        assert rows[T3][2].startswith("not run: " + reason)


def test_corrupt_notebook_is_graded_zero_with_the_reason(graded):
    rows = _by_task(graded, "corrupt")
    assert "not valid JSON" in rows["(notebook)"][2]
    assert _points(graded, "corrupt") == NONE
    assert rows[T1][1] == "1" and "not valid JSON" in rows[T1][2]


def test_deleted_or_renamed_check_cell_gives_zero_for_its_task_only(graded):
    deleted, renamed = _by_task(graded, "deleted"), _by_task(graded, "renamed")
    assert _points(graded, "deleted") == BEFORE_T3
    assert deleted[T3][2] == deleted[T3H][2] == "deleted or renamed cell c10"
    assert "deleted or renamed cell c10" in deleted["(notebook)"][2]
    assert "deleted or renamed cell c02" in deleted["(notebook)"][2]  # reported, but costs no points
    assert _points(graded, "renamed") == {**ALL, T1: 0}
    assert renamed[T1][2] == "deleted or renamed cell c04"


def test_a_check_cell_edited_to_pass_still_runs_the_released_check(graded):
    rows = _by_task(graded, "cheat")
    assert _points(graded, "cheat") == NONE
    assert rows[T1][2].startswith("CheckFailed: ") and "expected" in rows[T1][2]
    assert rows[T2][2] == "not attempted"


def test_writes_outside_the_folder_are_blocked_or_put_back_and_reported(graded):
    rows = _by_task(graded, "writer")
    message = rows["(notebook)"][2]
    subs = graded["subs"]
    for path in (subs / "evil.txt", graded["outside"], subs / "writer.ipynb"):
        assert f"tried to write outside its folder: {path.resolve()} (blocked)" in message
    assert f"changed {subs / 'shell.txt'} in the submissions folder (put back)" in message
    assert not (subs / "evil.txt").exists() and not (subs / "shell.txt").exists()
    assert _points(graded, "writer") == ALL  # the tasks themselves are still graded


# --------------------------------------------------------------------------- no notebooks run below
def test_the_kernel_gets_folders_of_its_own_whatever_the_graders_environment(tmp_path, monkeypatch):
    # torch sets TORCHINDUCTOR_CACHE_DIR in its process once it has compiled something: a kernel must not inherit it
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    monkeypatch.setenv("TMPDIR", "/elsewhere")
    env = grading._kernel_env(tmp_path)
    for name in ("HOME", "TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert Path(env[name]).is_relative_to(tmp_path), (name, env[name])
        assert Path(env[name]).is_dir()


def test_tasks_come_from_the_released_check_cells():
    tasks = grading.load_tasks(EXERCISE)
    assert [(t.name, t.kind, t.points) for t in tasks] == [
        (T1, "check", 1), (T2, "check", 1), (T2H, "hidden", 1), (T3, "check", 1), (T3H, "hidden", 1), (T4, "manual", 0)]
    assert tasks[0].grade_id == "check_c04" and "check_draft_agreement" in tasks[0].source
    for name in grading.exercise_names():
        checks = [t for t in grading.load_tasks(name) if t.kind == "check"]
        assert checks and all(t.name.startswith("Task") for t in checks), name


def test_every_hidden_check_follows_a_released_check_cell():
    from specdec_course.course.hidden_checks import HIDDEN

    for name, by_cell in HIDDEN.items():
        checks = {t.cell_id for t in grading.load_tasks(name) if t.kind == "check"}
        assert set(by_cell) <= checks, name


def test_grade_command_writes_the_csv_and_a_summary(tmp_path, capsys, monkeypatch):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "zoe.ipynb").write_text("{")
    monkeypatch.chdir(tmp_path)
    assert main(["grade", "subs", "--exercise", "03"]) == 0
    out = capsys.readouterr().out
    assert "zoe" in out and "0/3" in out and "wrote grades.csv" in out
    rows = list(csv.DictReader(open(tmp_path / "grades.csv", newline="")))
    assert [r["task"] for r in rows] == ["(notebook)", "Task 1 · Count the accepted drafts",
                                         "Task 1 · Count the accepted drafts (hidden check)", "Task 2 · By hand"]


def test_generated_exercises_carry_nbgrader_metadata():
    nb = exercises.make_exercise(json.loads((ROOT / "solutions" / f"{EXERCISE}.ipynb").read_text()), f"{EXERCISE}.ipynb")
    assert _cell(nb, "c04")["metadata"]["nbgrader"] == {"grade": True, "solution": False, "locked": True, "points": 1,
                                                        "grade_id": "check_c04", "schema_version": 3}
    assert _cell(nb, "c03")["metadata"]["nbgrader"]["solution"] is True
    assert _cell(nb, "c12")["metadata"]["nbgrader"]["grade"] is False


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
    assert grading.resolve_exercise("08") == EXERCISE


@pytest.mark.parametrize("argv, error", [
    (["grade", "/no/such/folder"], "does not exist"),
    (["grade", "{tmp}", "--exercise", "99_nothing"], "unknown exercise"),
    (["grade", "{tmp}", "--timeout", "0"], "--timeout must be a positive"),
    (["grade", "{tmp}"], "no notebooks in"),
])
def test_bad_command_line_is_a_clear_error(tmp_path, capsys, argv, error):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert error in capsys.readouterr().err
