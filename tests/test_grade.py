"""`python -m specdec_course grade`: a folder of learners' notebooks in, a CSV of points per task out.

One grading run serves most tests, over a folder of one sub-folder per learner: exercise 03 (light: pure-Python
checks, no model) solved, half-solved, untouched, crashing, corrupt, with a deleted and a renamed check cell, with a
check cell edited to `pass`; and exercise 08 solved (its checks send tiny models and tensors into the sandbox).
Hostile notebooks (escapes, tampering, daemons, filling memory or disk, loops) are in tests/test_sandbox.py.
"""
import csv
import hashlib
import json
from pathlib import Path

import pytest

from specdec_course.course import exercises, grading, sandbox
from specdec_course.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
EXERCISE, MODELS = "03_acceptance_rule", "08_training_a_draft_model"
LIMIT = 600  # seconds a notebook may run: far more than any of these needs, on any machine
T1, T2 = "Task 1 · Count the accepted drafts", "Task 2 · By hand, then as a function"
T3, T4 = "Task 3 · The acceptance rate, derived", "Task 4 · ... and checked by simulation"
T1H, T2H, T3H, T4H = (task + " (hidden check)" for task in (T1, T2, T3, T4))
AFTER_T2 = {T3: 2, T3H: 2, T4: 2, T4H: 2}  # points from each check cell's metadata; a hidden check as much as its check
ALL = {T1: 1, T1H: 1, T2: 2, T2H: 2, **AFTER_T2}
NONE = dict.fromkeys(ALL, 0)
BEFORE_T2 = {T1: 1, T1H: 1, T2: 0, T2H: 0, **dict.fromkeys(AFTER_T2, 0)}   # stopped at Task 2: nothing after it counts
ALL_BUT_T2 = {T1: 1, T1H: 1, T2: 0, T2H: 0, **AFTER_T2}
NO_SANDBOX = sandbox.unavailable_reason()
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"grading runs notebooks in a bubblewrap sandbox and "
                                   f"{NO_SANDBOX} (`make bubblewrap`, run by `make test`, installs it where it can)")


def _released(exercise=EXERCISE):
    return json.loads((ROOT / "exercises" / f"{exercise}.ipynb").read_text())


def _solution(exercise=EXERCISE):
    return {c["id"]: "".join(c["source"]) for c in json.loads((ROOT / "solutions" / f"{exercise}.ipynb").read_text())["cells"]}


def _solved(stub=(), exercise=EXERCISE):
    """The released exercise with the solutions filled in, except the cells in ``stub`` (left as released)."""
    nb = _released(exercise)
    solution = _solution(exercise)
    for cell in nb["cells"]:
        text = solution[cell["id"]]
        if exercises.BEGIN in text and cell["id"] not in stub:
            cell["source"] = "\n".join(line for line in text.split("\n") if line.strip() not in (exercises.BEGIN, exercises.END))
    return nb


def _cell(nb, cell_id):
    return next(c for c in nb["cells"] if c["id"] == cell_id)


def _hashes(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _write(subs, learner, nb, exercise=EXERCISE):
    (subs / learner).mkdir(parents=True, exist_ok=True)
    (subs / learner / f"{exercise}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if NO_SANDBOX is not None:
        pytest.skip(f"grading runs notebooks in a bubblewrap sandbox and {NO_SANDBOX}")
    base = tmp_path_factory.mktemp("grade")
    subs = base / "submissions"
    _write(subs, "solved", _solved())
    _write(subs, "half", _solved(stub=("c06",)))
    _write(subs, "untouched", _released())
    crash = _solved()
    _cell(crash, "c06")["source"] = "import os\nos._exit(1)\n"
    _write(subs, "crash", crash)
    _write(subs, "corrupt", '{"cells": [ this is not json')
    deleted = _solved()
    deleted["cells"] = [c for c in deleted["cells"] if c["id"] not in ("0c08957b", "c05")]  # a check cell, a heading
    _write(subs, "deleted", deleted)
    renamed = _solved()
    _cell(renamed, "c04")["id"] = "my-own-id"
    _write(subs, "renamed", renamed)
    cheat = _released()
    _cell(cheat, "c03")["source"] = "def textbook_accept(p_tokens, q_tokens, r):\n    return 0\n"
    _cell(cheat, "c04")["source"] = "pass\n"
    _cell(cheat, "0c08957b")["source"] = "pass\n"
    _write(subs, "cheat", cheat)
    _write(subs, "models", _solved(exercise=MODELS), MODELS)

    before = _hashes(subs)
    lines = []
    rows = grading.grade(subs, timeout=LIMIT, out=base / "grades.csv", log=lines.append)
    with open(base / "grades.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    return {"rows": rows, "csv": written, "before": before, "after": _hashes(subs), "subs": subs, "log": "\n".join(lines)}


def _by_task(graded, learner):
    return {r["task"]: (r["points"], r["max_points"], r["message"]) for r in graded["csv"] if r["learner"] == learner}


def _points(graded, learner):
    rows = _by_task(graded, learner)
    return {task: float(p) for task, (p, _, _) in rows.items() if task != "(notebook)" and p != ""}


def test_every_submitted_file_is_unchanged_byte_for_byte(graded):
    assert graded["after"] == graded["before"]


def test_csv_has_a_row_per_learner_and_task(graded):
    assert list(graded["csv"][0]) == grading.COLUMNS
    learners = {r["learner"] for r in graded["csv"]}
    assert learners == {"solved", "half", "untouched", "crash", "corrupt", "deleted", "renamed", "cheat", "models"}
    for learner in learners - {"models"}:
        assert set(_by_task(graded, learner)) == {"(notebook)", *ALL}
        assert {r["exercise"] for r in graded["csv"] if r["learner"] == learner} == {EXERCISE}
    assert "solved" in graded["log"] and "14/14" in graded["log"] and "wrote" in graded["log"]
    assert "TRUSTED" not in graded["log"]


def test_solution_full_marks_untouched_zero_half_solved_half(graded):
    assert _points(graded, "solved") == ALL
    assert _by_task(graded, "solved")[T1][2] == "passed"
    assert _by_task(graded, "solved")["(notebook)"][2].startswith("ran in a sandbox in ")
    assert _points(graded, "untouched") == NONE
    assert {m for _, _, m in _by_task(graded, "untouched").values()} == {"not attempted", _by_task(graded, "untouched")["(notebook)"][2]}
    assert _points(graded, "half") == ALL_BUT_T2


def test_a_solution_that_takes_models_and_tensors_scores_full_marks(graded):
    rows = _by_task(graded, "models")
    assert _points(graded, "models") == {t: float(m) for t, (p, m, _) in rows.items() if p != "" and t != "(notebook)"}
    assert len(_points(graded, "models")) == 12, rows  # 6 checks (a model, tensors, numbers, dicts, data, a clock), 6 hidden
    assert rows["Task 4 · In your own words"][:2] == ("", "2")  # its rubric's points, given by hand
    assert rows["Task 4 · In your own words"][2].startswith("manual: answered (")


def test_crash_keeps_the_points_before_it(graded):
    rows = _by_task(graded, "crash")
    assert _points(graded, "crash") == BEFORE_T2, rows
    assert "the kernel died (crashed) in cell c06" in rows["(notebook)"][2]
    assert rows[T2][2].startswith("not run: the kernel died")


def test_corrupt_notebook_is_graded_zero_with_the_reason(graded):
    rows = _by_task(graded, "corrupt")
    assert "not valid JSON" in rows["(notebook)"][2]
    assert _points(graded, "corrupt") == NONE
    assert rows[T1][1] == "1" and "not valid JSON" in rows[T1][2]


def test_deleted_or_renamed_check_cell_gives_zero_for_its_task_only(graded):
    deleted, renamed = _by_task(graded, "deleted"), _by_task(graded, "renamed")
    assert _points(graded, "deleted") == ALL_BUT_T2
    assert deleted[T2][2] == "deleted or renamed cell 0c08957b"
    assert "deleted or renamed cell 0c08957b" in deleted["(notebook)"][2]
    assert "deleted or renamed cell c05" in deleted["(notebook)"][2]  # reported, but costs no points
    assert _points(graded, "renamed") == {T1: 0, T1H: 0, T2: 2, T2H: 2, **AFTER_T2}  # the hidden check belongs to the same task
    assert renamed[T1][2] == renamed[T1H][2] == "deleted or renamed cell c04"


def test_a_check_cell_edited_to_pass_still_runs_the_released_check(graded):
    rows = _by_task(graded, "cheat")
    assert _points(graded, "cheat") == NONE
    assert rows[T1][2].startswith("CheckFailed: ") and "expected" in rows[T1][2]
    assert rows[T2][2] == "not attempted"


# --------------------------------------------------------------------------- no notebooks run below
def test_the_kernel_gets_folders_of_its_own_whatever_the_graders_environment(tmp_path, monkeypatch):
    # torch sets TORCHINDUCTOR_CACHE_DIR in its process once it has compiled something: a kernel must not inherit it
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    monkeypatch.setenv("TMPDIR", "/elsewhere")
    monkeypatch.setenv("GITHUB_TOKEN", "a secret")
    env = sandbox.kernel_env(tmp_path / "home", tmp_path, tmp_path / "cache")
    for name in ("HOME", "TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert Path(env[name]).is_relative_to(tmp_path), (name, env[name])
    assert "GITHUB_TOKEN" not in env  # only a short list of the grader's variables goes in


def test_tasks_come_from_the_released_check_cells():
    tasks = grading.load_tasks(MODELS)
    t1, t2, t3, t4, t5 = ("Task 1 · Greedy agreement, teacher-forced", "Task 2 · Expected tokens per step",
                          "Task 3 · The distillation loss", "Task 4 · In your own words",
                          "Task 5 · Pick a draft for a target (beyond the chapter)")
    t6 = "Task 6 · Train two drafts, measure them, then choose (beyond the chapter)"
    t62 = t6 + " (check 2)"
    assert [(t.name, t.kind, t.points) for t in tasks] == [(t1, "check", 2), (t1 + " (hidden check)", "hidden", 2),
                                                           (t2, "check", 1), (t2 + " (hidden check)", "hidden", 1),
                                                           (t3, "check", 2), (t3 + " (hidden check)", "hidden", 2), (t4, "manual", 2),
                                                           (t5, "check", 2), (t5 + " (hidden check)", "hidden", 2),
                                                           (t6, "check", 2), (t6 + " (hidden check)", "hidden", 2),
                                                           (t62, "check", 2), (t62 + " (hidden check)", "hidden", 2)]
    assert tasks[0].grade_id == "check_c04" and "check_draft_agreement" in tasks[0].source
    assert grading.check_names(tasks[0].source) == (["draft_agreement"], [])
    for name in grading.exercise_names():
        checks = [t for t in grading.load_tasks(name) if t.kind == "check"]
        assert checks and all(t.name.startswith("Task") for t in checks), name


def test_every_hidden_check_follows_a_released_check_cell():
    from specdec_course.course.hidden_checks import HIDDEN

    for name, by_cell in HIDDEN.items():
        checks = {t.cell_id for t in grading.load_tasks(name) if t.kind == "check"}
        assert set(by_cell) <= checks, name


def test_every_name_a_check_cell_reads_is_a_learner_definition_or_made_by_the_grader():
    """The grader gives a check cell a proxy for each learner name and makes the set-up values (SETUP) itself."""
    for name in grading.exercise_names():
        defined = set()
        for cell in _solved(exercise=name)["cells"]:
            if cell["cell_type"] == "code" and "check" not in cell["metadata"].get("tags", []):
                tree = __import__("ast").parse(grading._source(cell))
                defined |= {n.name for n in tree.body if type(n).__name__ in ("FunctionDef", "ClassDef")}
        for task in grading.load_tasks(name):
            if task.kind == "check":
                read, _ = grading.check_names(task.source)
                assert set(read) <= defined | set(grading.SETUP), (name, task.name, set(read) - defined)


def test_grade_command_writes_the_csv_and_a_summary(tmp_path, capsys, monkeypatch):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "zoe.ipynb").write_text("{")
    monkeypatch.chdir(tmp_path)
    assert main(["grade", "subs", "--exercise", "03", "--trusted"]) == 0  # nothing runs: no sandbox needed
    out = capsys.readouterr().out
    assert "zoe" in out and "0/14" in out and "wrote grades.csv" in out and "TRUSTED" in out
    rows = list(csv.DictReader(open(tmp_path / "grades.csv", newline="")))
    assert [r["task"] for r in rows] == ["(notebook)", T1, T1H, T2, T2H, T3, T3H, T4, T4H]
    assert rows[0]["message"].startswith("TRUSTED, not sandboxed (--trusted): not valid JSON")


def test_without_a_sandbox_grade_refuses_unless_trusted(tmp_path, capsys, monkeypatch):
    (tmp_path / "zoe.ipynb").write_text("{")
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "bubblewrap (bwrap) is not installed")
    assert main(["grade", str(tmp_path), "--exercise", "03", "--out", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "bubblewrap (bwrap) is not installed" in err and "--trusted" in err and "apt-get install bubblewrap" in err
    assert not (tmp_path / "g.csv").exists()


def test_generated_exercises_carry_nbgrader_metadata():
    nb = exercises.make_exercise(json.loads((ROOT / "solutions" / f"{MODELS}.ipynb").read_text()), f"{MODELS}.ipynb")
    assert _cell(nb, "c04")["metadata"]["nbgrader"] == {"grade": True, "solution": False, "locked": True, "points": 2,
                                                        "grade_id": "check_c04", "schema_version": 3}
    assert _cell(nb, "c04")["metadata"]["deletable"] is False and _cell(nb, "c04")["metadata"]["editable"] is False
    assert _cell(nb, "c12")["metadata"]["nbgrader"]["points"] == 2  # the written answer: its rubric's points
    assert _cell(nb, "c01")["metadata"]["nbgrader"]["locked"] and _cell(nb, "c01")["metadata"]["deletable"] is False
    assert _cell(nb, "c03")["metadata"]["nbgrader"]["solution"] is True
    assert _cell(nb, "c12")["metadata"]["nbgrader"]["grade"] is True and _cell(nb, "c12")["metadata"]["nbgrader"]["solution"] is True


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
    assert grading.resolve_exercise("08") == MODELS


@pytest.mark.parametrize("argv, error", [
    (["grade", "/no/such/folder"], "does not exist"),
    (["grade", "{tmp}", "--exercise", "99_nothing"], "unknown exercise"),
    (["grade", "{tmp}", "--timeout", "0"], "--timeout must be a positive"),
    (["grade", "{tmp}"], "no notebooks in"),
    (["grade", "{tmp}", "--memory-mb", "100"], "--memory-mb must be at least 512"),
])
def test_bad_command_line_is_a_clear_error(tmp_path, capsys, argv, error):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert error in capsys.readouterr().err


def test_each_hidden_check_is_worth_as_much_as_its_visible_check_and_answers_their_rubric():
    for name in grading.exercise_names():
        tasks = grading.load_tasks(name)
        visible = {t.cell_id: t.points for t in tasks if t.kind == "check"}
        assert all(1 <= p <= 3 for p in visible.values()), (name, visible)
        assert {t.cell_id: t.points for t in tasks if t.kind == "hidden"} == visible, name
        solution = {c["id"]: "".join(c["source"]) for c in json.loads((ROOT / "solutions" / f"{name}.ipynb").read_text())["cells"]}
        for task in (t for t in tasks if t.kind == "manual"):
            assert f"Rubric ({task.points:g} points)" in solution[task.cell_id], (name, task.name)
