import pytest

from specdec_course.quiz import Question, Quiz


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
