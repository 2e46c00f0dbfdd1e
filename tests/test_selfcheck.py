"""The learner's self-check (``python -m specdec_course check``): real kernels on copies of the exercises."""
import json
from pathlib import Path

import pytest

from specdec_course.__main__ import main
from specdec_course.course import selfcheck

ROOT = Path(__file__).resolve().parent.parent


def _cells(folder: str, exercise: str) -> tuple[dict, dict]:
    nb = json.loads((ROOT / folder / f"{exercise}.ipynb").read_text())
    return nb, {c["id"]: c for c in nb["cells"]}


def _write(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    """Two learners' notebooks: 03 with Tasks 1 and 3 solved (2 and 4 left), 01 with a wrong Task 1, a cell of Task 3
    that does not parse, and one of its two written answers given. Returns (folder, results, bytes before)."""
    folder = tmp_path_factory.mktemp("learner") / "exercises"
    folder.mkdir()
    nb, cells = _cells("exercises", "03_acceptance_rule")
    _, solved = _cells("solutions", "03_acceptance_rule")
    for cell_id in ("c03", "c09"):  # Task 1 and Task 3
        cells[cell_id]["source"] = solved[cell_id]["source"]
    _write(folder / "03_acceptance_rule.ipynb", nb)
    nb, cells = _cells("exercises", "01_greedy_draft_generation")
    cells["c03"]["source"] = "def draft_tokens(draft, input_ids, tau):\n    return [0] * tau\n"
    cells["c08"]["source"] = "def draft_tokens_fed(prompt_length, tau, accepted, use_cache)\n    return []\n"
    answer = next(c for c in nb["cells"] if "".join(c["source"]).strip() == "YOUR ANSWER HERE")
    answer["source"] = "Each draft token is conditioned on the ones before it, so they come one pass at a time."
    _write(folder / "01_greedy_draft_generation.ipynb", nb)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    lines = []
    results = selfcheck.check(["03", "01_greedy_draft_generation.ipynb"], folder=folder, log=lines.append)
    return folder, results, before, "\n".join(lines)


def _status(results, exercise):
    return [(r.task.split(" · ")[0], r.status) for r in results if r.exercise == exercise]


def test_solved_tasks_pass_and_the_others_are_not_attempted(worked):
    _, results, _, _ = worked
    assert _status(results, "03_acceptance_rule") == [("Task 1", "passed"), ("Task 2", "not attempted"),
                                                      ("Task 3", "passed"), ("Task 4", "not attempted")]


def test_a_wrong_answer_fails_with_the_checks_message_and_a_broken_cell_stops_its_check(worked):
    _, results, _, _ = worked
    rows = {r.task.split(" · ")[0]: r for r in results if r.exercise == "01_greedy_draft_generation"}
    assert rows["Task 1"].status == "failed" and rows["Task 1"].hint.startswith("draft_tokens: 12 of 12 cases wrong")
    assert rows["Task 3"].status == "not run" and "cell c08 above it failed: SyntaxError" in rows["Task 3"].hint
    assert [rows[t].status for t in ("Task 2", "Task 4")] == ["written", "written"]
    assert rows["Task 2"].hint.startswith("answered (18 words)") and rows["Task 4"].hint == "not answered yet"


def test_the_table_counts_checks_and_points_per_exercise(worked):
    _, results, _, printed = worked
    points = {r.task.split(" · ")[0]: r.points for r in results if r.exercise == "03_acceptance_rule"}
    assert points == {"Task 1": 1, "Task 2": 2, "Task 3": 2, "Task 4": 2}  # the notebook's metadata
    assert "03_acceptance_rule: 3 of 7 points (2 of 4 checks passed)" in printed
    assert "01_greedy_draft_generation: 0 of 5 points (0 of 2 checks passed; 2 written answers for your instructor)" \
        in printed
    assert printed.rstrip().endswith("2 of 6 checks passed")
    header = next(line for line in printed.split("\n") if line.startswith("exercise"))
    assert header.split() == ["exercise", "task", "result", "hint"]


def test_the_learners_notebooks_are_not_changed(worked):
    folder, _, before, _ = worked
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_unknown_exercise_is_a_clear_error(worked, capsys):
    folder = worked[0]
    with pytest.raises(ValueError, match=r"unknown exercise '99'; choose one of 01_greedy_draft_generation, "
                                         r"03_acceptance_rule"):
        selfcheck.check(["99"], folder=folder)
    assert main(["check", "acceptance", "--folder", str(folder)]) == 2
    assert "error: unknown exercise 'acceptance'; choose one of" in capsys.readouterr().err
    assert main(["check", "--folder", str(folder / "nowhere")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_a_folder_without_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="holds no exercise notebooks"):
        selfcheck.check(folder=tmp_path)


def test_hint_keeps_the_first_case_and_the_checks_hint():
    error = {"ename": "CheckFailed", "evalue": "f: 2 of 5 cases wrong:\n  case 1: expected 3, got 4\n  case 2: x\n"
                                               "hint: divide by T"}
    assert selfcheck.hint_of(error) == "f: 2 of 5 cases wrong: case 1: expected 3, got 4 (hint: divide by T)"
    assert selfcheck.hint_of({"ename": "NameError", "evalue": "name 'f' is not defined"}) == \
        "NameError: name 'f' is not defined"
