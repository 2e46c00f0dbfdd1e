"""INSTRUCTORS.md cannot drift from the course: every written task's answer key and rubric (the markdown solution
cells of solutions/) appears in it word for word, and every notebook has its section.

To print the rubric section again after a solution changed:  .venv/bin/python tests/test_instructors.py
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "INSTRUCTORS.md"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HEADING = re.compile(r"^## Task (\d+) · (.+)$", re.M)
TIME_ROW = re.compile(r"^\| (\d+) \| (.+?) \| \d+ min \|$", re.M)
RUBRIC = re.compile(r"Rubric \((\d+) points?\)")


def written_tasks(solutions: Path = ROOT / "solutions") -> list[dict]:
    """Every answer in words of solutions/, in order: {notebook, number, title, question, points, solution}, where
    the title is the task's row in the notebook's time table and the solution is the text between the markers."""
    tasks = []
    for path in sorted(solutions.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        rows = {int(n): what for n, what in TIME_ROW.findall("".join(cells[0]["source"]))}
        number = question = None
        for cell in cells:
            text = "".join(cell["source"])
            if cell["cell_type"] != "markdown":
                continue
            heading = HEADING.search(text)
            if heading:
                number = int(heading.group(1))
                question = " ".join(text[heading.end():].split())
            if BEGIN in text:
                solution = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
                points = RUBRIC.search(solution)
                tasks.append({"notebook": path.name, "number": number, "question": question,
                              "title": rows.get(number, heading.group(2) if heading else ""),
                              "points": int(points.group(1)) if points else None, "solution": solution})
    return tasks


def rubric_section(tasks: list[dict] | None = None) -> str:
    """The body of INSTRUCTORS.md's rubric section: each written task's question, then its solution verbatim."""
    parts = []
    for task in tasks or written_tasks():
        title = task["title"][:1].upper() + task["title"][1:]
        parts.append(f"### {task['notebook'][:2]} · Task {task['number']} · {title} ({task['points']} points)\n\n"
                     f"**Task** (`solutions/{task['notebook']}`): {task['question']}\n\n"
                     f"**Answer key and rubric:**\n\n{task['solution']}\n")
    return "\n".join(parts)


def normalised(text: str) -> str:
    return " ".join(text.split())


def guide_text() -> str:
    assert GUIDE.is_file(), "INSTRUCTORS.md is missing at the repository's root"
    return GUIDE.read_text()


def test_the_solutions_have_written_tasks_with_rubrics():
    tasks = written_tasks()
    assert len(tasks) >= 11
    assert all(task["points"] and task["number"] and task["question"] for task in tasks), \
        [t for t in tasks if not (t["points"] and t["number"] and t["question"])]


@pytest.mark.parametrize("task", written_tasks(), ids=lambda t: f"{t['notebook'][:2]}-task{t['number']}")
def test_every_written_tasks_answer_key_is_in_the_guide_verbatim(task):
    guide = normalised(guide_text())
    assert normalised(task["solution"]) in guide, (
        f"the answer key of {task['notebook']} Task {task['number']} is not in INSTRUCTORS.md as it stands in "
        "solutions/: print the section again with `.venv/bin/python tests/test_instructors.py` and replace it")
    assert normalised(task["question"]) in guide, f"the question of {task['notebook']} Task {task['number']} is missing"


def test_the_check_sees_a_changed_answer_key():
    task = written_tasks()[0]
    changed = dict(task, solution=task["solution"].replace("Rubric", "Rubrik", 1))
    assert normalised(changed["solution"]) not in normalised(guide_text())
    assert normalised(changed["solution"]) in normalised(rubric_section([changed]))


def test_every_notebook_has_its_section_in_the_guide():
    guide = guide_text()
    assert "## Notebook by notebook" in guide
    part = guide.split("## Notebook by notebook", 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### (?=\d\d · )", part, flags=re.M)[1:]
    found = {section[:2]: section for section in sections}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        number = notebook.name[:2]
        assert number in found, f"INSTRUCTORS.md has no section '### {number} · …' under 'Notebook by notebook'"
        for part_name in ("Common mistakes", "Discussion", "Short of time"):
            assert f"**{part_name}" in found[number], f"the section of notebook {number} lacks '{part_name}'"


def test_the_guides_exercise_minutes_are_the_exercises_own():
    """The table "The course at a glance" gives each exercise's minutes, all tasks and short lab: the figures at the
    top of the exercise ("About N minutes in all", "about M minutes without ...")."""
    glance = re.findall(r"^\| (\d\d) \| `\w+` \|.*\| (\d+) min \| (\d+) min \| [^|]+ \|$", guide_text(), re.M)
    assert len(glance) == len(list((ROOT / "exercises").glob("*.ipynb"))), glance
    for number, total, short in glance:
        path = next((ROOT / "exercises").glob(f"{number}_*.ipynb"))
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        stated = re.search(r"About (\d+) minutes in all", first)
        without = re.search(r"about (\d+) minutes without", first)
        assert stated and int(total) == int(stated.group(1)), f"{path.name}: the guide says {total} min in all"
        assert int(short) == int(without.group(1) if without else total), f"{path.name}: short lab {short} min"


def test_the_guide_plans_the_four_kinds_of_lab_and_a_class_workflow():
    guide = guide_text()
    for heading in ("A 2-hour lab", "A 3-hour lab", "A 2-day workshop", "A semester module", "Pre-lab checklist",
                    "Grading a class", "Rubrics and answer keys for written tasks"):
        assert re.search(rf"^#+ {re.escape(heading)}", guide, re.M), f"INSTRUCTORS.md lacks the heading {heading!r}"


if __name__ == "__main__":
    print(rubric_section())
