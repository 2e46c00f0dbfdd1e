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


# words that tell the course's own history or how it is tested, never the subject
HISTORY = re.compile(r"earlier (draft|version) of this course|this course (was|used to)|previous (course )?draft|"
                     r"the test suite|old held-out|old training|previous session|was developed on", re.I)


def _cells_text(path, outputs=True, checked_only=False):
    """Each cell's source (and its outputs' text: only of cells nbval checks, with ``checked_only``), with its type."""
    for cell in json.loads(path.read_text())["cells"]:
        text = "".join(cell["source"])
        if outputs and (not checked_only or "NBVAL_CHECK_OUTPUT" in text):
            for out in cell.get("outputs", []):
                text += "\n" + "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
        yield cell["cell_type"], text


def test_no_sentence_about_the_courses_own_history():
    solutions = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    for path in NOTEBOOKS + solutions:
        for kind, text in _cells_text(path, outputs=False):
            found = HISTORY.search(text)
            assert not found, f"{path.parent.name}/{path.name}: {kind} cell says {found.group(0)!r}: {text[:200]!r}"


def test_no_cell_answers_a_quiz_question_before_the_learner():
    """A computed answer (a number like 1.75 or 46,080 in the keyed option, not given in the question) is never printed
    by a deterministic cell, or written in code, before the quiz: the learner works it out. (A measured timing may show
    any number by chance: only code and the outputs of the cells nbval checks are searched.)"""
    from specdec_course.course.quizzes import QUIZZES

    for path in NOTEBOOKS:
        before = []
        for kind, text in _cells_text(path, checked_only=True):
            if "quiz_for(" in text or "## Quiz" in text:
                break
            if kind == "code":
                before.append(text)
        before = re.sub(r"\s+", " ", "\n".join(before))
        for number, question in enumerate(QUIZZES[path.name[:2]], 1):
            given = set(re.findall(r"\d+[.,]\d{2,}", question.text))
            given |= {f"0.{p:0>2}" for p in re.findall(r"(\d+)%", question.text)}  # 12% is given as 0.12
            for value in set(re.findall(r"\d+[.,]\d{2,}", question.options[question.answer])) - given:
                assert not re.search(rf"(?<![\d.,]){re.escape(value)}(?![\d.,]*\d)", before), \
                    f"{path.name}: a cell shows {value}, the answer to quiz question {number}"


def test_no_cell_answers_the_quiz_for_the_learner():
    """The quiz's text form is shown, never used: no cell calls quiz.answer (its feedback names the right option)."""
    for path in NOTEBOOKS:
        for kind, text in _cells_text(path, outputs=False):
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
            assert kind != "code" or "quiz.answer(" not in code, f"{path.name}: a cell answers the quiz: {text!r}"


def test_the_quiz_example_in_each_notebook_is_not_that_questions_answer():
    """The comment that shows how to answer in text form, e.g. quiz.answer(1, "c"), must not give the answer away."""
    from specdec_course.course.quiz import LETTERS
    from specdec_course.course.quizzes import QUIZZES

    for path in NOTEBOOKS:
        for kind, text in _cells_text(path, outputs=False):
            for number, letter in re.findall(r"quiz\.answer\((\d+),\s*[\"'](\w)[\"']\)", text):
                question = QUIZZES[path.name[:2]][int(number) - 1]
                assert LETTERS[question.answer] != letter, \
                    f"{path.name}: the example quiz.answer({number}, {letter!r}) is question {number}'s right answer"


def test_no_quiz_gives_its_answer_away_by_length():
    """The right option is not conspicuously the longest: at most 1.5 times the others' mean length (options of a few
    characters, such as numbers, are exempt)."""
    from specdec_course.course.quizzes import QUIZZES

    for notebook, questions in QUIZZES.items():
        for number, question in enumerate(questions, 1):
            lengths = [len(option) for option in question.options]
            others = [n for i, n in enumerate(lengths) if i != question.answer]
            if max(lengths) < 25:
                continue
            assert lengths[question.answer] <= 1.5 * sum(others) / len(others), \
                f"quiz {notebook} question {number}: the right option is {lengths[question.answer]} characters, the " \
                f"others {others}: balance them"


CASE_STUDIES = ["Efficiency Limits of a Two-Model Generation System",
                "Root-Causing Low Speedup Despite Parallel Verification",
                "Choosing τ and Model Roles for Low-Latency Speculative Decoding",
                "Tuning Speculative Decoding Under a Fixed Verification Budget",
                "Interpreting a Speculative Decoding Trace and Identifying the Bottleneck",
                "Explaining a 'Fast but Wrong' Speculative Decoding Regression",
                "Designing a Speculative Decoding Control Policy for a Latency-Sensitive Product",
                "Diagnosing a Speculative Decoding Slowdown in Production"]


@pytest.mark.parametrize("title", CASE_STUDIES)
def test_every_case_study_of_the_syllabus_is_a_section_with_code(title):
    """Each seed case study is a notebook heading (or an exercise task) followed, within its section, by code."""
    solutions = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    for path in NOTEBOOKS + solutions:
        cells = list(_cells_text(path, outputs=False))
        for index, (kind, text) in enumerate(cells):
            heading = next((line for line in text.splitlines() if line.startswith("#") and title.lower() in line.lower()),
                           None)
            if kind != "markdown" or heading is None:
                continue
            level = len(heading) - len(heading.lstrip("#"))
            rest = text.split(heading, 1)[1]
            for later_kind, later in [("markdown", rest)] + cells[index + 1:]:
                if later_kind == "code" and later.strip():
                    return
                if any(line.startswith("#") and len(line) - len(line.lstrip("#")) <= level
                       for line in later.splitlines()):
                    break
            pytest.fail(f"{path.name}: the section {heading!r} has no code cell")
    pytest.fail(f"no notebook or exercise has a section titled {title!r}")


# ---------------------------------------------------------------- verdicts are printed by code, from the run's numbers
# A measured number: a time, a rate, a speedup ratio (1.23x) or a percentage of one of them. A cell whose output shows
# one is "measured"; the judgement of it ("faster", "close to the prediction", "τ = 2 is best") is printed by code:
# a line "What this run shows: ..." in that cell's output or a later code cell's, within the same section.
MEASURED = re.compile(r"\d\s*(ms|tokens/s|tok/s)\b|\d\.\d+x\b|\d\s*s per|\bT\(\d+\)/T\(1\)\s*=?\s*\d")
VERDICT = "What this run shows:"
# words that judge a measured comparison; a sentence that uses one in markdown after a measurement must tell the
# learner what to look for (a condition or a question), not state the outcome
JUDGING = re.compile(r"\b(faster|slower|wins?|won|beats?|loses|lost to|close to|pays off|barely|clearly|far (to|from)|"
                     r"outperforms?|better than|worse than|(is|was) (the )?(best|fastest|slowest))\b", re.I)
GUIDING = re.compile(r"\b(if|whether|look (for|at)|expect|unless|when|where|can|could|may|might|would)\b|\?", re.I)
# a paragraph that quotes a recording (a file under benchmarks/, a model card) quotes fixed numbers, not this run's
RECORDING = re.compile(r"record|benchmarks/|model card", re.I)


def _output_text(cell):
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))
    # the loader's and the machine's lines describe the set-up, not a result to judge
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(("specdec_course:", "machine:", "mode:", "CPU ", "GPU ")))


def _sections(path):
    """The notebook's cells cut at each level-1 or level-2 heading: lists of (index, kind, text, cell); a markdown cell
    whose heading comes after some prose gives that prose to the section before."""
    sections, current = [], []
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        text = "".join(cell["source"])
        heading = re.search(r"^#{1,2} ", text, flags=re.M) if cell["cell_type"] == "markdown" else None
        if heading:
            if text[:heading.start()].strip():
                current.append((index, "markdown", text[:heading.start()], cell))
            sections.append(current)
            current, text = [], text[heading.start():]
        current.append((index, cell["cell_type"], text, cell))
    return sections + [current]


def _sentences(text):
    text = re.sub(r"\$[^$]*\$", "MATH", text)  # formulas carry no verdicts
    return [s for s in re.split(r"(?<=[.!?:])\s+(?=[A-Z*(])|\n\s*[*-] |\n\n", text) if s.strip()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_header_says_both_running_times_and_the_output_says_which_mode_ran(path):
    cells = json.loads(path.read_text())["cells"]
    top = "".join(cells[0]["source"])
    assert "quick mode" in top and "SPECDEC_QUICK=1" in top, \
        f"{path.name}: the header gives the full and the quick running time and how to switch (SPECDEC_QUICK=1)"
    first = next(c for c in cells if c["cell_type"] == "code" and c.get("outputs"))
    out = "".join("".join(o.get("text", "")) for o in first["outputs"])
    assert re.search(r"^mode: (quick|full) mode", out, flags=re.M), \
        f"{path.name}: the first output names the machine and the mode (print(sc.run_line()))"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_measurement_is_judged_by_code_and_markdown_states_no_measured_outcome(path):
    problems = []
    for section in _sections(path):
        measured_at = None
        for index, kind, source, cell in section:
            if kind == "code" and "quiz_for(" in source:
                continue  # the quiz's worked numbers are given, not measured
            if kind == "code":
                out = _output_text(cell)
                if VERDICT in out:
                    measured_at = None
                elif measured_at is None and MEASURED.search(out):
                    measured_at = index
                continue
            if index == 0:
                continue
            paragraphs = [p for p in source.split("\n\n") if not RECORDING.search(p)]
            for sentence in _sentences("\n\n".join(paragraphs)):
                flat = " ".join(sentence.split())
                if MEASURED.search(flat):
                    problems.append(f"[{index}] markdown quotes a measured number: {flat[:160]!r}")
                elif measured_at is not None and JUDGING.search(flat) and not GUIDING.search(flat):
                    problems.append(f"[{index}] markdown judges the measurement of [{measured_at}]: {flat[:160]!r}")
        if measured_at is not None:
            problems.append(f"[{measured_at}] measures, and no cell of its section prints {VERDICT!r}")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
