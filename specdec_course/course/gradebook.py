"""A class's grades after the notebooks ran: rubric scores merged in, a roster, one row per learner, feedback files.

    python -m specdec_course gradebook grades.csv --manual manual.csv --roster roster.csv \\
        --by-learner class.csv --feedback feedback/

(the same options on ``grade`` do it right after grading). The rows are ``grade``'s CSV rows: learner, exercise,
task, points, max_points, message; a written answer's row has empty points until a rubric score is merged.

* ``--manual FILE``: CSV with columns learner, exercise, task, points and an optional comment. The exercise may be
  given by its number ("04"), the task by its number ("Task 3") or its full name; only written answers take
  manual points, from 0 to the rubric's maximum.
* ``--roster FILE``: CSV with columns learner, student_id and an optional name. Learners on the roster with nothing
  handed in get 0 on every task ("no submission"); graded learners missing from it are listed in a warning.
* ``--by-learner FILE``: one row per learner (student_id, name, learner, one column per task with its checks and
  hidden check added up, total, max, written answers still to grade): what a learning platform imports.
* ``--feedback DIR``: one Markdown file per learner: for each task its points, the grader's message and a hint
  on what to do next. A hidden check's message never gives the expected value.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from .grading import COLUMNS, NOTEBOOK, RELEASED, grade, load_tasks, resolve_exercise, summary, write_rows

MANUAL_COLUMNS = ("learner", "exercise", "task", "points")
ROSTER_COLUMNS = ("learner", "student_id")
FEEDBACK_MARK = ".specdec-feedback"  # a feedback folder this module wrote, so it may write there again


# --------------------------------------------------------------------------- reading
def _read_csv(path, required: tuple, what: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{what} file {path} lacks the column(s) {', '.join(missing)}: its header must have "
                             f"{', '.join(required)}; found {', '.join(header) or 'no header'}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: points must be a number, got {text!r}") from None
    if value != value or value < 0:
        raise ValueError(f"{where}: points must be a number of at least 0, got {text!r}")
    return value


def read_grades(path) -> list[dict]:
    """The rows of a CSV written by ``grade`` (points and max_points as numbers; empty points stay "")."""
    rows = _read_csv(path, tuple(COLUMNS), "grades")
    for number, row in enumerate(rows, 2):
        row["max_points"] = _number(row["max_points"], f"{path} line {number}")
        row["points"] = "" if row["points"] == "" else _number(row["points"], f"{path} line {number}")
    return rows


def read_roster(path) -> dict[str, dict]:
    """learner -> {"student_id", "name"}."""
    roster = {}
    for number, row in enumerate(_read_csv(path, ROSTER_COLUMNS, "roster"), 2):
        if not row["learner"]:
            raise ValueError(f"roster {path} line {number}: the learner is empty")
        if row["learner"] in roster:
            raise ValueError(f"roster {path} line {number}: learner {row['learner']!r} is listed twice")
        roster[row["learner"]] = {"student_id": row["student_id"], "name": row.get("name", "")}
    return roster


# --------------------------------------------------------------------------- rubric scores
def _task_row(rows: list[dict], learner: str, exercise: str, task: str, where: str, released: Path) -> dict:
    """The row of ``learner``'s written answer ``task`` ("Task 3" or the full name) in ``exercise``."""
    mine = [r for r in rows if r["learner"] == learner and r["exercise"] == exercise]
    if not mine:
        learners = sorted({r["learner"] for r in rows})
        raise ValueError(f"{where}: {learner!r} has no graded notebook for {exercise}; graded learners: "
                         f"{', '.join(learners)}")
    written = [t.name for t in load_tasks(exercise, released) if t.kind == "manual"]
    named = [n for n in written if n == task or re.match(re.escape(task) + r"\s*·", n)]
    if not named:
        automatic = any(r["task"] == task or re.match(re.escape(task) + r"\s*·", r["task"]) for r in mine)
        raise ValueError(f"{where}: {exercise} has no written answer {task!r}"
                         f"{' (that task is graded automatically)' if automatic else ''}. Manual points are for "
                         f"written answers: {'; '.join(written) or 'this exercise has none'}")
    return next(r for r in mine if r["task"] == named[0])


def merge_manual(rows: list[dict], path, released: Path = RELEASED) -> int:
    """Put the rubric scores of ``path`` into the written answers' rows (in place). Returns how many."""
    seen = set()
    for number, entry in enumerate(_read_csv(path, MANUAL_COLUMNS, "manual scores"), 2):
        where = f"{path} line {number}"
        try:
            exercise = resolve_exercise(entry["exercise"], released)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        row = _task_row(rows, entry["learner"], exercise, entry["task"], where, released)
        key = (entry["learner"], exercise, row["task"])
        if key in seen:
            raise ValueError(f"{where}: {entry['learner']}'s {exercise} {row['task']!r} is scored twice")
        seen.add(key)
        points = _number(entry["points"], where)
        if points > row["max_points"]:
            raise ValueError(f"{where}: {points:g} points for {row['task']!r}, whose rubric gives at most "
                             f"{row['max_points']:g}")
        row["points"] = points
        comment = entry.get("comment", "")
        row["message"] = "graded by hand" + (f": {comment}" if comment else "")
    return len(seen)


# --------------------------------------------------------------------------- one row per learner
def _task_key(row: dict) -> tuple[str, str]:
    """(exercise, task) with a task's hidden check and further checks counted under the task itself."""
    task = re.sub(r"( \(check \d+\))?( \(hidden check\))?$", "", row["task"])
    return row["exercise"], task


def column_name(exercise: str, task: str) -> str:
    number = re.match(r"Task (\d+)", task)
    return f"{exercise[:2]} task {number.group(1)}" if number else f"{exercise[:2]} {task}"


def by_learner(rows: list[dict], roster: dict | None = None, released: Path = RELEASED) -> tuple[list[str], list[dict]]:
    """(header, rows) of the wide table: one row per learner, a column per task (points summed), total and max."""
    roster = roster or {}
    exercises = list(dict.fromkeys(r["exercise"] for r in rows if r["exercise"]))
    tasks = []  # every task of every exercise graded, in notebook order, also for learners who left one out
    for exercise in exercises:
        for task in load_tasks(exercise, released):
            key = _task_key({"exercise": exercise, "task": task.name})
            if key not in tasks:
                tasks.append(key)
    learners = list(dict.fromkeys([r["learner"] for r in rows] + list(roster)))
    header = ["student_id", "name", "learner"] + [column_name(*key) for key in tasks] + \
             ["total", "max", "written answers to grade", "notes"]
    table = []
    for learner in learners:
        mine = [r for r in rows if r["learner"] == learner]
        points = dict.fromkeys(tasks, 0.0)
        pending, notes = 0, []
        for row in mine:
            if row["task"] == NOTEBOOK:
                if row["message"] and not row["message"].startswith(("ran ", "TRUSTED")):
                    notes.append(f"{row['exercise'][:2] or '?'}: {row['message']}")
                continue
            if row["points"] == "":
                pending += 1
            elif _task_key(row) in points:
                points[_task_key(row)] += row["points"]
        maximum = 0.0
        for exercise in exercises:  # a learner is marked out of every exercise the class was graded on
            maximum += sum(t.points for t in load_tasks(exercise, released))
        if not mine:
            notes.append("no submission")
        info = roster.get(learner, {"student_id": "", "name": ""})
        line = {"student_id": info["student_id"], "name": info["name"], "learner": learner,
                "total": _fmt(sum(points.values())), "max": _fmt(maximum), "written answers to grade": pending,
                "notes": "; ".join(notes)}
        line.update({column_name(*key): _fmt(value) for key, value in points.items()})
        table.append(line)
    return header, table


def _fmt(value: float) -> str:
    return f"{value:g}"


def write_by_learner(rows: list[dict], path, roster: dict | None = None, released: Path = RELEASED, log=print) -> None:
    header, table = by_learner(rows, roster, released)
    path = Path(path)
    existed = path.exists()
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(table)
    log(f"wrote {path}: one row per learner ({len(table)})" + (" (replaced the previous file)" if existed else ""))


# --------------------------------------------------------------------------- feedback a learner can read
def hint(row: dict) -> str:
    """What to do next, from the grader's message (never an expected value)."""
    message, task = row["message"], row["task"]
    if row["task"] == NOTEBOOK:
        return ""
    if row["points"] != "" and row["points"] >= row["max_points"]:
        return ""
    if message.startswith("manual:") or message.startswith("graded by hand"):
        if row["points"] != "":
            return ""
        return ("write your answer in the cell marked YOUR ANSWER HERE" if "not answered" in message else
                "your answer in words is graded by hand with the task's rubric")
    if message == "not attempted":
        return "fill in the cell marked `# YOUR CODE HERE` above this check and run the check"
    if message.startswith("deleted or renamed cell"):
        return ("a cell of the released exercise is missing from your notebook: copy it back from the released "
                "exercise (same place, unchanged) so that this task can be graded")
    if message.startswith("delegates to the course"):
        return "write the task's code yourself: calling the course's own implementation of it scores nothing"
    if message.startswith(("not run", "not graded")):
        return "your notebook stopped before this check: run it from the top in a fresh kernel and fix the first error"
    if task.endswith("(hidden check)"):
        return ("your function passed the cases you can see but not other ones: read the task again for the inputs it "
                "allows (sizes, edge cases, other models) and test your function on some of your own")
    return "run the check cell in your notebook: it lists each case your function gets wrong"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "learner"


def write_feedback(rows: list[dict], folder, roster: dict | None = None, log=print) -> list[Path]:
    """One Markdown file per learner in ``folder`` (made if missing; one this wrote before is written again)."""
    check_inputs(feedback=folder)
    folder = Path(folder)
    roster = roster or {}
    learners = list(dict.fromkeys([r["learner"] for r in rows] + list(roster)))
    names = {}
    for learner in learners:
        stem = _safe(learner)
        if stem in names.values():
            raise ValueError(f"learners {learner!r} and {next(k for k, v in names.items() if v == stem)!r} would "
                             "share a feedback file name: rename one")
        names[learner] = stem
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FEEDBACK_MARK).write_text("feedback files written by `python -m specdec_course grade/gradebook`\n")
    written = []
    for learner in learners:
        mine = [r for r in rows if r["learner"] == learner]
        info = roster.get(learner, {})
        title = learner + (f" ({info['student_id']})" if info.get("student_id") else "")
        lines = [f"# Feedback for {title}", ""]
        if not mine:
            lines += ["Nothing was handed in.", ""]
        for exercise in dict.fromkeys(r["exercise"] for r in mine):
            part = [r for r in mine if r["exercise"] == exercise]
            got = sum(r["points"] for r in part if r["points"] != "")
            most = sum(r["max_points"] for r in part)
            pending = sum(1 for r in part if r["points"] == "" and r["task"] != NOTEBOOK)
            lines += [f"## {exercise or 'a notebook that was not recognised'}: {_fmt(got)} of {_fmt(most)} points"
                      + (f" ({pending} written answer{'s' if pending > 1 else ''} still to grade)" if pending else ""), ""]
            notebook = next((r for r in part if r["task"] == NOTEBOOK), None)
            if notebook and notebook["message"]:
                lines += [f"Your notebook: {notebook['message']}", ""]
            lines += ["| Task | Points | What the grader found | What to do |", "|---|---|---|---|"]
            for row in part:
                if row["task"] == NOTEBOOK:
                    continue
                points = "to grade" if row["points"] == "" else _fmt(row["points"])
                cells = [row["task"], f"{points} / {_fmt(row['max_points'])}", row["message"], hint(row)]
                lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
            lines.append("")
        path = folder / f"{names[learner]}.md"
        path.write_text("\n".join(lines))
        written.append(path)
    log(f"wrote {len(written)} feedback files in {folder}")
    return written


# --------------------------------------------------------------------------- all of it
def check_inputs(*, manual=None, roster=None, feedback=None) -> None:
    """Fail now, before minutes of grading, on a missing or malformed --manual/--roster file or an unusable folder."""
    if manual:
        _read_csv(manual, MANUAL_COLUMNS, "manual scores")
    if roster:
        read_roster(roster)
    if feedback:
        folder = Path(feedback)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--feedback {folder} is a file: give a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / FEEDBACK_MARK).exists():
            raise ValueError(f"--feedback {folder} already holds files that this command did not write: give a new or "
                             "empty folder (nothing in it is overwritten)")


def publish(rows: list[dict], *, manual=None, roster=None, by_learner_path=None, feedback=None,
            released: Path = RELEASED, log=print) -> dict | None:
    """Merge ``manual`` scores into ``rows`` (in place), then write the wide CSV and the feedback files asked for.
    Every file is read and checked before anything is written. Returns the roster (or None)."""
    people = read_roster(roster) if roster else None
    if manual:
        log(f"merged {merge_manual(rows, manual, released)} rubric scores from {manual}")
    if people is not None:
        strays = sorted({r["learner"] for r in rows} - set(people))
        if strays:
            log(f"WARNING: not on the roster {roster}: {', '.join(strays)} (no student id in the exports)")
    if by_learner_path:
        write_by_learner(rows, by_learner_path, people, released, log)
    if feedback:
        write_feedback(rows, feedback, people, log)
    return people


def grade_class(folder, *, manual=None, roster=None, by_learner=None, feedback=None, out="grades.csv",
                released: Path = RELEASED, log=print, **options) -> list[dict]:
    """``grading.grade`` (``options``: exercise, timeout, trusted, memory_mb, max_processes), then ``publish``; the
    CSV at ``out`` ends with the rubric scores merged. The files given are checked before any notebook runs."""
    check_inputs(manual=manual, roster=roster, feedback=feedback)
    rows = grade(folder, out=out, released=released, log=log, **options)
    if manual or roster or by_learner or feedback:
        publish(rows, manual=manual, roster=roster, by_learner_path=by_learner, feedback=feedback, released=released,
                log=log)
        if manual:
            write_rows(rows, out, log)
            log(summary(rows))
    return rows
