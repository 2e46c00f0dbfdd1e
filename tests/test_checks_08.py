"""Exercise 08's checks (visible and hidden) accept right answers, name the usual mistakes, and never show a hidden
case's expected value. Tiny models and a simulated clock only: no timing of this machine."""
import time

import pytest
import torch

from helpers import hidden_failure
from specdec_course.course import checks, hidden_checks, references
from specdec_course.generation import forward_time

EXERCISE = "08_training_a_draft_model"


@torch.no_grad()
def draft_agreement(draft, input_ids, target_tokens):
    sequence = torch.cat([input_ids, torch.tensor([target_tokens])], dim=1)
    predictions = draft(sequence).logits[0, input_ids.shape[1] - 1:-1].argmax(-1)
    return (predictions == torch.tensor(target_tokens)).float().mean().item()


def expected_tokens_per_step(alpha, tau):
    return sum(alpha ** t for t in range(tau + 1))


def distillation_loss(draft_logits, target_logits):
    return torch.nn.functional.cross_entropy(draft_logits, target_logits.argmax(-1))


def measure_draft(target, draft, held_out):
    return references.held_out_alpha(draft, held_out), forward_time(draft, 100, 1) / forward_time(target, 100, 1)


SOLUTION = {"draft_agreement": draft_agreement, "expected_tokens_per_step": expected_tokens_per_step,
            "distillation_loss": distillation_loss, "choose_draft": references.choose_draft,
            "held_out_alpha": references.held_out_alpha, "measure_draft": measure_draft}


def _hidden_failure(cell, fn) -> str:
    return hidden_failure(EXERCISE, cell, fn)


def test_every_graded_task_has_a_hidden_check():
    assert {name for name, _, _ in hidden_checks.HIDDEN[EXERCISE].values()} == set(SOLUTION)


def test_right_answers_pass_the_visible_and_the_hidden_checks(capsys):
    checks.check_draft_agreement(draft_agreement)
    checks.check_measure_draft(measure_draft, references.choose_draft)
    for cell in hidden_checks.HIDDEN[EXERCISE]:
        hidden_checks.run(EXERCISE, cell, SOLUTION)
    assert capsys.readouterr().out.count("✓ hidden check") == len(SOLUTION)


def test_an_agreement_off_by_one_fails_visible_and_hidden_without_the_expected_value():
    @torch.no_grad()
    def off_by_one(draft, input_ids, target_tokens):  # the logits at position i compared with token i
        sequence = torch.cat([input_ids, torch.tensor([target_tokens])], dim=1)
        predictions = draft(sequence).logits[0, input_ids.shape[1]:].argmax(-1)
        return (predictions == torch.tensor(target_tokens)).float().mean().item()

    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_draft_agreement(off_by_one)
    assert "position i predict" in _hidden_failure("c04", off_by_one)


def test_the_usual_c_mistakes_are_named():
    def inverted(target, draft, held_out):
        alpha, c = measure_draft(target, draft, held_out)
        return alpha, 1 / c

    def whole_sequence(target, draft, held_out):  # an uncached pass over 100 tokens instead of one cached token
        ids = torch.randint(0, target.config.vocab_size, (1, 100), generator=torch.Generator().manual_seed(0))
        seconds = []
        for model in (draft, target):
            from specdec_course.perf import clock

            start = clock.now()
            with torch.no_grad():
                model(ids)
            seconds.append(clock.now() - start)
        return references.held_out_alpha(draft, held_out), seconds[0] / seconds[1]

    def wall_clock(target, draft, held_out):  # time.perf_counter times this machine, not the course's clock
        times = []
        for model in (draft, target):
            start = time.perf_counter()
            forward_time(model, 100, 1)
            times.append(time.perf_counter() - start)
        return references.held_out_alpha(draft, held_out), times[0] / times[1]

    with pytest.raises(checks.CheckFailed, match="target's step over the draft's"):
        checks.check_measure_draft(inverted, references.choose_draft)
    with pytest.raises(checks.CheckFailed, match="passes over 100 tokens"):
        checks.check_measure_draft(whole_sequence, references.choose_draft)
    with pytest.raises(checks.CheckFailed, match="c: expected"):
        checks.check_measure_draft(wall_clock, references.choose_draft)
    assert "draft's time over the target's" in _hidden_failure("c18b", inverted)
    _hidden_failure("c18b", wall_clock)


def test_a_wrong_alpha_or_a_wrong_choice_fails():
    from specdec_course.distill import label_accuracy

    def prompt_positions_too(target, draft, held_out):
        return label_accuracy(draft, held_out, answers_only=False), measure_draft(target, draft, held_out)[1]

    def most_accurate(candidates, verify_ratio):
        name = max(candidates, key=lambda k: candidates[k][0])
        return references.choose_draft({name: candidates[name]}, verify_ratio)

    with pytest.raises(checks.CheckFailed, match="prompt positions counted too"):
        checks.check_measure_draft(prompt_positions_too, references.choose_draft)
    assert "prompt positions counted too" in _hidden_failure("c18b", prompt_positions_too)
    with pytest.raises(checks.CheckFailed, match="choose_draft picks"):
        checks.check_measure_draft(measure_draft, most_accurate)


def test_the_measure_cases_need_a_real_choice():
    """The choice means something: across the visible and hidden cases more than one draft wins."""
    winners = set()
    for seed in (0, 7):
        for case in checks.measure_cases(seed):
            truth = {name: (references.held_out_alpha(d, case["data"]), cost[0] / case["target_cost"][0])
                     for name, (d, cost) in case["drafts"].items()}
            winners.add(references.choose_draft(truth, case["ratio"])[0])
    assert len(winners) >= 2


def test_no_hidden_failure_of_08_shows_an_expected_value():
    def wrong_choice(candidates, verify_ratio):
        return references.choose_draft(candidates, verify_ratio, taus=[1])

    _hidden_failure("c07", lambda alpha, tau: sum(alpha ** t for t in range(tau)))
    _hidden_failure("c10", lambda d, t: torch.nn.functional.cross_entropy(d, d.argmax(-1)))
    _hidden_failure("c15", wrong_choice)
    _hidden_failure("c18", lambda draft, held_out: 0.5)
