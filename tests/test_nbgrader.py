"""A class of three learners graded twice: by nbgrader (from `python -m specdec_course nbgrader`) and by our grader.

Exercises 03 (checks only) and 01 (a model, and two answers in words), handed in by ann (solved), ben (partly) and
cat (untouched). nbgrader's generate_assignment must turn the exported source into exactly our exercises, and its
autograde must give every graded cell the points our grader gives that cell's check plus its hidden check. Our run
also merges rubric scores and a roster, and writes the one-row-per-learner CSV and feedback files.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specdec_course.__main__ import main
from specdec_course.course import gradebook, grading, sandbox
from test_grade import _released, _solved

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = {"03_acceptance_rule": ("c09", "c12"), "01_greedy_draft_generation": ("c08",)}  # what ben leaves unsolved
LEARNERS = ("ann", "ben", "cat")
BIN = Path(sys.executable).parent  # nbgrader runs `alembic` from PATH

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is a test dependency (requirements-test.txt, make test)")


def _nbgrader(course: Path, *args) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _handed_in(learner: str, exercise: str) -> dict:
    return {"ann": lambda: _solved(exercise=exercise), "ben": lambda: _solved(stub=EXERCISES[exercise], exercise=exercise),
            "cat": lambda: _released(exercise)}[learner]()


@pytest.fixture(scope="module")
def graded_twice(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    course, subs = base / "course", base / "submissions"
    assert main(["nbgrader", str(course), *EXERCISES]) == 0
    for exercise in EXERCISES:
        _nbgrader(course, "generate_assignment", exercise, "--force")
        for learner in LEARNERS:
            nb = json.dumps(_handed_in(learner, exercise), indent=1)
            for path in (course / "submitted" / learner / exercise / f"{exercise}.ipynb",
                         subs / learner / f"{exercise}.ipynb"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(nb)
        _nbgrader(course, "autograde", exercise, "--create")
    from nbgrader.api import Gradebook

    theirs = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as book:
        for exercise in EXERCISES:
            for learner in LEARNERS:
                notebook = book.find_submission_notebook(exercise, exercise, learner)
                theirs.update({(learner, exercise, g.name): (g.score, g.max_score, g.needs_manual_grade)
                               for g in notebook.grades})

    (base / "roster.csv").write_text("learner,student_id,name\nann,s001,Ann A.\nben,s002,Ben B.\ncat,s003,Cat C.\n"
                                     "dan,s004,Dan D.\n")
    (base / "manual.csv").write_text("learner,exercise,task,points,comment\n"
                                     "ann,01,Task 2,2,both points: sequential dependence and a cheap draft\n"
                                     "ann,01,Task 4 · In your own words,1.5,the cache's cost per step is right; "
                                     "the growth without one is missing\n"
                                     "ben,01,Task 2,1,\n")
    lines = []
    rows = gradebook.grade_class(subs, timeout=600, out=base / "grades.csv", log=lines.append,
                                 trusted=sandbox.unavailable_reason() is not None, manual=base / "manual.csv",
                                 roster=base / "roster.csv", by_learner=base / "class.csv", feedback=base / "feedback")
    with open(base / "class.csv", newline="") as handle:
        wide = list(csv.DictReader(handle))
    print("\n".join(lines))
    print((base / "class.csv").read_text())
    print((base / "feedback" / "ben.md").read_text())
    return {"theirs": theirs, "rows": rows, "wide": wide, "base": base, "course": course, "log": "\n".join(lines)}


def test_nbgrader_makes_our_exercises_from_the_exported_source(graded_twice):
    for exercise in EXERCISES:
        released = json.loads((graded_twice["course"] / "release" / exercise / f"{exercise}.ipynb").read_text())
        ours = _released(exercise)
        assert [c["id"] for c in released["cells"]] == [c["id"] for c in ours["cells"]]
        for theirs, mine in zip(released["cells"], ours["cells"]):
            assert "".join(theirs["source"]).rstrip() == "".join(mine["source"]).rstrip(), (exercise, mine["id"])
            assert "HIDDEN" not in "".join(theirs["source"])  # the hidden checks stay in the instructor's copy


def test_nbgrader_and_our_grader_give_the_same_points(graded_twice):
    theirs, rows = graded_twice["theirs"], graded_twice["rows"]
    tasks = {exercise: grading.load_tasks(exercise) for exercise in EXERCISES}
    compared = 0
    for (learner, exercise, grade_id), (score, max_score, needs_manual) in theirs.items():
        cell = grade_id.split("_", 1)[1]
        mine = [t for t in tasks[exercise] if t.cell_id == cell]
        got = {r["task"]: r["points"] for r in rows if r["learner"] == learner and r["exercise"] == exercise}
        if grade_id.startswith("answer_"):  # a written answer: nbgrader waits for a human too (cat left it blank)
            assert needs_manual == (learner != "cat") and [t.kind for t in mine] == ["manual"]
            assert max_score == mine[0].points
            continue
        assert max_score == sum(t.points for t in mine)
        assert score == sum(got[t.name] for t in mine), (learner, exercise, grade_id)
        print(f"{learner:4} {exercise[:2]} {grade_id:16} nbgrader {score:g}/{max_score:g}  ours "
              + " + ".join(f"{got[t.name]:g}" for t in mine))
        compared += 1
    assert compared == 3 * 6
    assert {theirs[("ann", e, g)][0] for e in EXERCISES for g in ("check_c04",)} == {2.0, 4.0}  # full marks counted
    assert theirs[("ben", "03_acceptance_rule", "check_c10")][0] == 0 and theirs[("cat", "01_greedy_draft_generation",
                                                                                 "check_c04")][0] == 0


def test_one_row_per_learner_with_student_ids_totals_and_rubric_scores(graded_twice):
    wide = {r["learner"]: r for r in graded_twice["wide"]}
    assert list(wide) == ["ann", "ben", "cat", "dan"]  # the roster's learner with nothing handed in too
    assert [wide[l]["student_id"] for l in wide] == ["s001", "s002", "s003", "s004"]
    most = sum(t.points for e in EXERCISES for t in grading.load_tasks(e))
    assert {float(r["max"]) for r in wide.values()} == {most}
    assert float(wide["ann"]["total"]) == most - 0.5  # every check, and 3.5 of 4 rubric points
    assert wide["ann"]["01 task 2"] == "2" and wide["ann"]["01 task 4"] == "1.5" and wide["ann"]["03 task 2"] == "4"
    assert wide["ben"]["01 task 2"] == "1" and wide["ben"]["01 task 3"] == "0" and wide["ben"]["written answers to grade"] == "1"
    assert float(wide["cat"]["total"]) == 0 and wide["cat"]["written answers to grade"] == "2"
    assert float(wide["dan"]["total"]) == 0 and "no submission" in wide["dan"]["notes"]


def test_feedback_files_say_what_to_do_and_never_a_hidden_expected_value(graded_twice):
    folder = graded_twice["base"] / "feedback"
    assert sorted(p.name for p in folder.glob("*.md")) == ["ann.md", "ben.md", "cat.md", "dan.md"]
    ann, ben, cat = ((folder / f"{n}.md").read_text() for n in ("ann", "ben", "cat"))
    assert "# Feedback for ann (s001)" in ann and "both points: sequential dependence" in ann
    assert "not attempted" in ben and "fill in the cell marked `# YOUR CODE HERE`" in ben
    assert "write your answer in the cell marked YOUR ANSWER HERE" in cat and "to grade / 2" in cat
    for row in graded_twice["rows"]:
        if row["task"].endswith("(hidden check)"):
            assert "expected" not in row["message"]


def test_rubric_scores_are_checked_before_they_are_merged(tmp_path):
    rows = [{"learner": "ann", "exercise": "01_greedy_draft_generation", "task": t.name,
             "points": "" if t.kind == "manual" else t.points, "max_points": t.points, "message": "x"}
            for t in grading.load_tasks("01_greedy_draft_generation")]
    cases = {
        "learner,exercise,points\nann,01,2\n": "lacks the column(s) task",
        "learner,exercise,task,points\nann,01,Task 1,1\n": "that task is graded automatically",
        "learner,exercise,task,points\nann,01,Task 2,3\n": "whose rubric gives at most 2",
        "learner,exercise,task,points\nann,01,Task 2,two\n": "points must be a number",
        "learner,exercise,task,points\nzoe,01,Task 2,1\n": "'zoe' has no graded notebook",
        "learner,exercise,task,points\nann,99,Task 2,1\n": "unknown exercise '99'",
        "learner,exercise,task,points\nann,01,Task 2,1\nann,01,Task 2,2\n": "is scored twice",
    }
    for text, message in cases.items():
        (tmp_path / "m.csv").write_text(text)
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            gradebook.merge_manual([dict(r) for r in rows], tmp_path / "m.csv")
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        gradebook.check_inputs(feedback=tmp_path / "feedback")
    assert (tmp_path / "feedback" / "notes.txt").read_text() == "mine"


def test_gradebook_merges_into_an_existing_grades_csv(tmp_path, capsys):
    rows = [{"learner": "ann", "exercise": "01_greedy_draft_generation", "task": t.name,
             "points": "" if t.kind == "manual" else 0, "max_points": t.points, "message": "manual: answered (9 words)"}
            for t in grading.load_tasks("01_greedy_draft_generation")]
    grading.write_rows(rows, tmp_path / "grades.csv", log=lambda *_: None)
    (tmp_path / "m.csv").write_text("learner,exercise,task,points,comment\nann,01_greedy_draft_generation,Task 4,2,good\n")
    assert main(["gradebook", str(tmp_path / "grades.csv"), "--manual", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "merged.csv"), "--feedback", str(tmp_path / "fb")]) == 0
    merged = {r["task"]: r for r in csv.DictReader(open(tmp_path / "merged.csv"))}
    assert merged["Task 4 · In your own words"]["points"] == "2" and merged["Task 2 · In your own words"]["points"] == ""
    assert "+1 to grade" in capsys.readouterr().out
    assert main(["gradebook", str(tmp_path / "grades.csv")]) == 2  # nothing asked: said, not silently done
    shutil.rmtree(tmp_path / "fb")
