"""Short multiple-choice quizzes with immediate feedback.

In JupyterLab each question is a widget (pick an option, press Check). Where no widget front
end is attached (a terminal, a static web view of the notebook, CI), the same quiz shows as
text and ``quiz.answer(number, letter)`` gives the feedback.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

LETTERS = "abcdefgh"


@dataclass
class Question:
    text: str
    options: list[str]
    answer: int  # index into options
    explanation: str

    def feedback(self, choice: int) -> str:
        right = f"({LETTERS[self.answer]}) {self.options[self.answer]}"
        if choice == self.answer:
            return f"Correct. {self.explanation}"
        return f"Not quite: the answer is {right}. {self.explanation}"


class Quiz:
    def __init__(self, title: str, questions: list[Question]):
        for q in questions:
            if not 0 <= q.answer < len(q.options):
                raise ValueError(f"question {q.text[:40]!r}: answer index {q.answer} is not one of its options")
        self.title = title
        self.questions = questions

    # ---- text form
    def as_text(self) -> str:
        lines = [self.title, ""]
        for number, q in enumerate(self.questions, 1):
            lines.append(f"{number}. {q.text}")
            lines += [f"   ({LETTERS[i]}) {option}" for i, option in enumerate(q.options)]
            lines.append("")
        lines.append("Answer with quiz.answer(NUMBER, 'LETTER').")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4><ol>"]
        for q in self.questions:
            options = "".join(f"<li>{html.escape(o)}</li>" for o in q.options)
            parts.append(f"<li>{html.escape(q.text)}<ol type='a'>{options}</ol></li>")
        parts.append("</ol><p>Answer with <code>quiz.answer(NUMBER, 'LETTER')</code>.</p>")
        return "".join(parts)

    def __repr__(self) -> str:
        return self.as_text()

    def answer(self, number: int, letter: str) -> None:
        """Feedback for answering question ``number`` (1-based) with option ``letter``."""
        if not isinstance(number, int) or not 1 <= number <= len(self.questions):
            raise ValueError(f"question number must be 1..{len(self.questions)}, got {number!r}")
        q = self.questions[number - 1]
        allowed = LETTERS[: len(q.options)]
        if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip().lower() not in allowed:
            raise ValueError(f"answer with one letter of {', '.join(allowed)}, got {letter!r}")
        print(q.feedback(allowed.index(letter.strip().lower())))

    # ---- widget form
    def widget(self):
        import ipywidgets as w

        boxes = [w.HTML(f"<h4>{html.escape(self.title)}</h4>")]
        for number, q in enumerate(self.questions, 1):
            choice = w.RadioButtons(options=[(f"({LETTERS[i]}) {o}", i) for i, o in enumerate(q.options)], value=None,
                                    layout=w.Layout(width="max-content"))
            button = w.Button(description="Check", button_style="info")
            out = w.HTML()

            def on_click(_, q=q, choice=choice, out=out):
                if choice.value is None:
                    out.value = "<i>Pick an option first.</i>"
                    return
                good = choice.value == q.answer
                colour = "#1a7f37" if good else "#b35900"
                out.value = f"<span style='color:{colour}'>{html.escape(q.feedback(choice.value))}</span>"

            button.on_click(on_click)
            boxes += [w.HTML(f"<b>{number}. {html.escape(q.text)}</b>"), choice, button, out]
        return w.VBox(boxes)

    def show(self):
        """Display the quiz: a widget with a text/HTML fallback for views without widgets."""
        from IPython.display import display

        try:
            widget = self.widget()
            bundle = widget._repr_mimebundle_()
        except Exception:  # no ipywidgets: text only
            print(self.as_text())
            return
        bundle = dict(bundle) if isinstance(bundle, dict) else {}
        bundle["text/plain"] = self.as_text()
        bundle["text/html"] = self._repr_html_()
        display(bundle, raw=True)
