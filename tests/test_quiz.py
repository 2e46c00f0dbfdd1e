import pytest

from specdec_course.course.quiz import LETTERS, Question, Quiz


def _quiz():
    return Quiz("T", [Question("2 + 2?", ["3", "4"], 1, "Arithmetic."), Question("Sky?", ["blue", "green", "red"], 0, "Rayleigh.")])


def test_feedback_right_and_wrong(capsys):
    quiz = _quiz()
    quiz.answer(1, "b")
    assert capsys.readouterr().out.startswith("Correct.")
    quiz.answer(2, "C")
    out = capsys.readouterr().out
    assert out.startswith("Not quite") and "(a) blue" in out


@pytest.mark.parametrize("number, letter", [(0, "a"), (3, "a"), (1, "c"), (1, "ab"), (1, 2)])
def test_bad_answers_say_what_is_allowed(number, letter):
    with pytest.raises(ValueError):
        _quiz().answer(number, letter)


def test_text_fallback_lists_every_option():
    text = _quiz().as_text()
    assert "1. 2 + 2?" in text and "(c) red" in text and "quiz.answer" in text
    assert "<ol" in _quiz()._repr_html_()


def test_widget_has_a_check_button_per_question():
    import ipywidgets as w

    box = _quiz().widget()
    assert sum(isinstance(c, w.Button) for c in box.children) == 2
    button = [c for c in box.children if isinstance(c, w.Button)][0]
    radio = [c for c in box.children if isinstance(c, w.RadioButtons)][0]
    feedback = box.children[box.children.index(button) + 1]
    radio.value = 1
    button.click()
    assert "Correct" in feedback.value


def test_answer_index_must_exist():
    with pytest.raises(ValueError):
        Quiz("T", [Question("?", ["a"], 2, "")])


# ---- the course's own quizzes

def _course_questions():
    from specdec_course.course.quizzes import QUIZZES

    return [(name, q) for name, questions in QUIZZES.items() for q in questions]


def test_every_notebook_has_a_quiz_of_at_least_four_questions():
    from pathlib import Path

    from specdec_course.course.quizzes import QUIZZES, quiz_for

    notebooks = sorted(p.name[:2] for p in (Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(QUIZZES) == notebooks
    for name in notebooks:
        assert len(quiz_for(name).questions) >= 4, name
    with pytest.raises(ValueError, match="quizzes for 00"):
        quiz_for("99")


def test_right_answers_are_balanced_across_the_course():
    from collections import Counter

    questions = _course_questions()
    counts = Counter(LETTERS[q.answer] for _, q in questions)
    worst, n = counts.most_common(1)[0]
    assert n <= 0.4 * len(questions), f"({worst}) is right in {n} of {len(questions)} questions: {dict(counts)}"
    assert len(counts) >= 3, f"only letters {sorted(counts)} are ever right"


def test_the_right_option_is_not_given_away_by_its_length():
    questions = _course_questions()
    longest = [f"{name}: {q.text[:50]}" for name, q in questions
               if all(len(q.options[q.answer]) > len(o) for i, o in enumerate(q.options) if i != q.answer)]
    # with three options, chance alone makes the right one the longest a third of the time
    assert len(longest) <= len(questions) / 3, f"the right option is the longest in {len(longest)}: {longest}"


def test_the_seed_question_kinds_are_asked():
    texts = " ".join(q.text for _, q in _course_questions()).lower()
    assert "in order" in texts                      # order the steps of one cycle
    assert "leaving out" in texts                   # an earlier draft token left out of the context
    assert "draft's distribution" in texts          # the bug of correcting with the draft
