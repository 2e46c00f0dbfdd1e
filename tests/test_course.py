"""The course as a learner meets it: every notebook says what it is for and where to go next; one course map."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _markdown(path):
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_has_goals_prerequisites_time_summary_quiz_and_next(path):
    cells = json.loads(path.read_text())["cells"]
    text = _markdown(path)
    top = "".join(cells[0]["source"])
    assert "**Before this notebook:**" in top and "**Time:**" in top, f"{path.name}: goals/prerequisites/time at the top"
    assert re.search(r"\*\*You will\*\*|You will:", top), f"{path.name}: no goals at the top"
    summary = text.rfind("## Summary")
    assert summary > 0 and text.rfind("## Quiz") > summary, f"{path.name}: a summary, then the quiz, at the end"
    assert f"exercises/{path.name}" in text[summary:], f"{path.name}: points to its exercise"
    number = int(path.name[:2])
    if number < len(NOTEBOOKS) - 1:
        assert f"notebook {number + 1:02d}" in text[summary:], f"{path.name}: points to the next notebook"
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert any(f'quiz_for("{path.name[:2]}")' in c for c in code), f"{path.name}: its quiz comes from quizzes.py"


def test_one_course_map_lists_every_notebook_in_reading_order():
    names = [p.stem for p in NOTEBOOKS]
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\d\d) \| `(\w+)`", readme, flags=re.M)
    assert [name for _, name in rows] == names
    first = "".join(json.loads(NOTEBOOKS[0].read_text())["cells"][0]["source"])
    assert re.findall(r"^\| \**(\d\d)\** \|", first, flags=re.M) == [n[:2] for n in names]


def test_notebooks_speak_about_the_subject_not_the_project():
    for path in NOTEBOOKS:
        text = _markdown(path).lower()
        for phrase in ("the issue", "this issue", "issue #", "pull request"):
            assert phrase not in text, f"{path.name} mentions {phrase!r}"
