"""The exercise machinery: generation from solutions/, protection of learners' edits, checks both ways."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from specdec_course.course import checks, exercises, references
from specdec_course.generation import autoregressive_generate

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def test_strip_solutions_keeps_indentation_and_the_rest():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nprint(f)"
    assert exercises.strip_solutions(src) == (
        "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f)")
    assert exercises.strip_solutions("### BEGIN SOLUTION\nsecret\n### END SOLUTION", markdown=True) == "YOUR ANSWER HERE"


@pytest.mark.parametrize("bad", ["### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"])
def test_unbalanced_markers_are_errors(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        exercises.strip_solutions(bad, where="nb")


def test_committed_exercises_are_generated_from_solutions():
    assert exercises.generate(check=True, verbose=False) == [], "run `python -m specdec_course exercises` and commit"
    assert {p.name for p in EXERCISES} == {p.name for p in (ROOT / "solutions").glob("*.ipynb")}


def test_exercises_hide_every_solution_and_clear_outputs():
    for path in EXERCISES:
        solution = json.loads((ROOT / "solutions" / path.name).read_text())
        hidden = [line.strip() for c in solution["cells"] for line in "".join(c["source"]).split("\n")]
        inside, secret = False, []
        for line in hidden:
            if line == exercises.BEGIN:
                inside = True
            elif line == exercises.END:
                inside = False
            elif inside and line and not line.startswith("#"):
                secret.append(line)
        text = path.read_text()
        nb = json.loads(text)
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert exercises.BEGIN not in code and "NotImplementedError" in code
        assert not [s for s in secret if s in code and len(s) > 12], f"{path.name} shows solution lines"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def test_a_learners_edits_are_kept_not_overwritten(tmp_path):
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions")
    out = tmp_path / "exercises"
    exercises.generate(tmp_path / "solutions", out, verbose=False)
    target = sorted(out.glob("*.ipynb"))[0]
    assert not exercises.edited_by_hand(target)
    nb = json.loads(target.read_text())
    nb["cells"][0]["source"] = ["my own notes\n"]
    target.write_text(json.dumps(nb))
    assert exercises.edited_by_hand(target)
    report = exercises.generate(tmp_path / "solutions", out, verbose=False)
    backups = list((out / ".backup").glob("*.ipynb"))
    assert len(backups) == 1 and "my own notes" in backups[0].read_text()
    assert any("kept a copy" in line for line in report)
    assert exercises.generate(tmp_path / "solutions", out, check=True, verbose=False) == []


def test_check_mode_reports_a_stale_exercise(tmp_path):
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions")
    exercises.generate(tmp_path / "solutions", tmp_path / "exercises", verbose=False)
    target = sorted((tmp_path / "exercises").glob("*.ipynb"))[0]
    target.write_text(target.read_text().replace("Task 1", "Task one"))
    assert exercises.generate(tmp_path / "solutions", tmp_path / "exercises", check=True, verbose=False)


# ---------------------------------------------------------------- the checks catch wrong answers
def test_check_rejects_a_generator_without_cache():
    def no_cache(model, ids, n):
        return autoregressive_generate(model, ids, n, use_cache=False).tokens

    with pytest.raises(checks.CheckFailed, match="KV cache"):
        checks.check_greedy_generate(no_cache)


def test_check_rejects_wrong_tokens_and_names_the_input():
    def off_by_one(model, ids, n):
        return [t + 1 for t in autoregressive_generate(model, ids, n).tokens]

    with pytest.raises(checks.CheckFailed, match=r"expected \[.*got"):
        checks.check_greedy_generate(off_by_one)


def test_check_next_token_catches_the_first_position():
    with pytest.raises(checks.CheckFailed, match="LAST position"):
        checks.check_greedy_next_token(lambda model, ids: int(model(ids).logits[0, 0].argmax()))


def test_check_reports_crashes_clearly():
    def crash(model, ids, n):
        raise KeyError("oops")

    with pytest.raises(checks.CheckFailed, match="raised KeyError"):
        checks.check_greedy_generate(crash)


def test_reference_passes_its_own_check():
    checks.check_greedy_generate(lambda m, ids, n: autoregressive_generate(m, ids, n).tokens)
    checks.check_greedy_next_token(lambda m, ids: torch.argmax(m(ids).logits[0, -1]))


def test_check_draft_tokens_catches_the_prefix_only_bug():
    def prefix_only(draft, ids, tau):
        token = int(draft(ids).logits[0, -1].argmax())
        return [token] * tau

    with pytest.raises(checks.CheckFailed, match="conditioned on the draft tokens before it"):
        checks.check_draft_tokens(prefix_only)


def test_check_verify_demands_one_pass():
    from specdec_course.verify import verify

    def sequential(target, ids, drafts):
        rows = [torch.softmax(target(torch.cat([ids, torch.tensor([drafts[:t]], dtype=torch.long)], 1)).logits[0, -1], -1)
                for t in range(len(drafts) + 1)]
        return torch.stack(rows)

    with pytest.raises(checks.CheckFailed, match="ONE"):
        checks.check_verify(sequential)
    with pytest.raises(checks.CheckFailed, match="shape"):
        checks.check_verify(lambda t, ids, d: verify(t, ids, d)[:-1])
    checks.check_verify(lambda t, ids, d: verify(t, ids, d))


def test_check_textbook_accept_catches_counting_every_acceptance():
    def counts_all(p, q, r):
        return sum(pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p, q, r))

    with pytest.raises(checks.CheckFailed, match="first rejection"):
        checks.check_textbook_accept(counts_all)


def test_checks_of_the_acceptance_rate_take_the_right_answers_and_name_the_usual_mistakes():
    """Exercise 03 Tasks 3-4: Σ min(p, q) and a simulation with drafts drawn from q pass, visible and hidden; the usual
    mistakes are named; a simulation that returns the formula, or ignores the generator, fails."""
    from specdec_course.course import hidden_checks

    def rate(p, q):
        return float(torch.minimum(p, q).sum())

    def simulate(p, q, n, generator, draw_from=None):
        drafts = torch.multinomial(q if draw_from is None else draw_from(p, q), n, replacement=True, generator=generator)
        r = torch.rand(n, generator=generator)
        return float(((p[drafts] >= q[drafts]) | (r <= p[drafts] / q[drafts])).float().mean())

    checks.check_acceptance_rate(rate)
    hidden_checks.acceptance_rate(rate)
    checks.check_simulate_acceptance(simulate)
    hidden_checks.simulate_acceptance(simulate)
    for wrong, message in ((lambda p, q: float(torch.clamp(p / q, max=1).sum()), r"Σ_y min\(1, p/q\)"),
                           (lambda p, q: float(1 - (p - q).abs().sum()), "TV"),
                           (lambda p, q: float((p * torch.clamp(p / q, max=1)).sum()), "drawn from p")):
        with pytest.raises(checks.CheckFailed, match=message):
            checks.check_acceptance_rate(wrong)
    with pytest.raises(checks.CheckFailed, match="drawn from p"):
        checks.check_simulate_acceptance(lambda p, q, n, g: simulate(p, q, n, g, draw_from=lambda p, q: p))
    with pytest.raises(checks.CheckFailed, match="greedy draft"):
        checks.check_simulate_acceptance(lambda p, q, n, g: simulate(p, q, n, g, draw_from=lambda p, q:
                                                                      torch.nn.functional.one_hot(q.argmax(), len(q)).float()))
    with pytest.raises(checks.CheckFailed, match="not a fraction"):
        checks.check_simulate_acceptance(lambda p, q, n, g: rate(p, q))
    with pytest.raises(checks.CheckFailed, match="generator"):
        checks.check_simulate_acceptance(lambda p, q, n, g: simulate(p, q, n, torch.Generator().manual_seed(0)))
    with pytest.raises(checks.CheckFailed, match="drawn from p"):
        hidden_checks.simulate_acceptance(lambda p, q, n, g: simulate(p, q, n, g, draw_from=lambda p, q: p))


def test_check_correction_and_sequence_catch_off_by_one():
    with pytest.raises(checks.CheckFailed, match="argmax of the target's row n"):
        checks.check_greedy_correction(lambda p, n: int(p[max(n - 1, 0)].argmax()))
    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_sequence_after_step(lambda prefix, drafts, n, c: prefix + drafts[: n + 1] + [c])


def test_check_08_functions_catch_mistakes():
    with pytest.raises(checks.CheckFailed, match="α = 1"):
        checks.check_expected_tokens(lambda a, tau: (1 - a ** (tau + 1)) / (1 - a) if a < 1 else tau)
    with pytest.raises(checks.CheckFailed, match="TARGET's argmax"):
        checks.check_distillation_loss(lambda d, t: torch.nn.functional.cross_entropy(d, d.argmax(-1)))


def test_checks_06_07_catch_typical_mistakes_and_list_every_case(tmp_path):
    from specdec_course.course import checks

    with pytest.raises(checks.CheckFailed, match="that is the kept fraction"):
        checks.check_alpha_from_steps(lambda steps: sum(n for _, n in steps) / sum(t for t, _ in steps))
    with pytest.raises(checks.CheckFailed) as failed:  # κ = α for every τ: wrong except at τ = 1 and α in {0, 1}
        checks.check_kept_fraction(lambda alpha, tau: alpha)
    assert "cases wrong" in str(failed.value) and str(failed.value).count("\n") >= 5
    with pytest.raises(checks.CheckFailed, match="expected τ="):
        checks.check_choose_tau(lambda target_ms, draft_ms, alpha, max_tau: max_tau)
    with pytest.raises(checks.CheckFailed, match="gaps of 0 inside a step"):
        checks.check_token_gaps(lambda steps: [ms for ms, n in steps[1:]])
    with pytest.raises(checks.CheckFailed, match="no τ fits"):
        checks.check_capped_tau(lambda target_ms, draft_ms, alpha, bound, max_tau: 1)  # the old fallback

    class NeverGrows:
        max_tau = 16

        def __init__(self, start):
            self.tau = start

        def next_tau(self):
            return self.tau

        def update(self, step):
            self.tau = max(1, self.tau - 1)

    with pytest.raises(checks.CheckFailed, match="expected τ sequence"):
        checks.check_grow_shrink(NeverGrows)
    paths = checks.fault_traces(tmp_path)
    assert not any(name in str(path) for name in paths for path in paths.values()), "a trace's file name tells its fault"
    with pytest.raises(checks.CheckFailed, match="5 of 6 cases wrong"):
        checks.check_diagnose(lambda path: "none", paths)
    from specdec_course.perf.trace import analyse_trace

    checks.check_diagnose(lambda path: (analyse_trace(path).names or ["none"])[0], paths)


def test_latency_summary_of_bursts():
    from types import SimpleNamespace

    from specdec_course.perf.latency import arrival_times, latency_summary, percentile

    steps = [SimpleNamespace(draft_time=0.01, verify_time=0.03, emitted=[1, 2, 3]),
             SimpleNamespace(draft_time=0.01, verify_time=0.02, emitted=[4])]
    result = SimpleNamespace(steps=steps, tokens=[1, 2, 3, 4])
    assert arrival_times(result) == pytest.approx([0.04, 0.04, 0.04, 0.07])
    summary = latency_summary(result)
    assert summary["ttft_ms"] == pytest.approx(40) and summary["gap_max_ms"] == pytest.approx(30)
    assert summary["gap_p50_ms"] == pytest.approx(0) and summary["tpot_ms"] == pytest.approx(10)
    plain = SimpleNamespace(token_times=[0.1, 0.02, 0.02], tokens=[7, 8, 9])
    assert latency_summary(plain)["gap_p95_ms"] == pytest.approx(20)
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)


def _reference_loop(correct_from_draft=False, one_pass=True):
    import specdec_course as sc

    def loop(target, draft, ids, max_new, tau):
        new, passes = [], 0
        while len(new) < max_new:
            proposal = sc.draft_tokens(draft, ids, tau)
            drafts = proposal.tokens
            if one_pass:
                p = sc.verify(target, ids, drafts)
                passes += 1
            else:
                rows = []
                for t in range(tau + 1):
                    rows.append(sc.verify(target, torch.cat([ids, torch.tensor([drafts[:t]], dtype=ids.dtype)], 1), [])[0])
                    passes += 1
                p = torch.stack(rows)
            n = 0
            while n < tau and int(p[n].argmax()) == drafts[n]:
                n += 1
            fix = int(proposal.q[n].argmax()) if correct_from_draft and n < tau else int(p[n].argmax())
            new += drafts[:n] + [fix]
            ids = torch.cat([ids, torch.tensor([drafts[:n] + [fix]], dtype=ids.dtype)], 1)
        return new[:max_new], passes

    return loop


def test_check_speculative_loop_accepts_the_loop_and_catches_its_classic_bugs():
    checks.check_speculative_loop(_reference_loop())
    with pytest.raises(checks.CheckFailed, match="differs from the target's greedy output") as err:
        checks.check_speculative_loop(_reference_loop(correct_from_draft=True))
    assert "of 12 cases wrong" in str(err.value)
    with pytest.raises(checks.CheckFailed, match="one pass per step"):
        checks.check_speculative_loop(_reference_loop(one_pass=False))
    with pytest.raises(checks.NotAttempted):
        checks.check_speculative_loop(lambda *a: (_ for _ in ()).throw(NotImplementedError()))


def test_check_cache_step_catches_a_missing_or_wrong_rollback():
    def step(model, cache, new, keep, *, rollback=True, off_by_one=0):
        with torch.no_grad():
            logits = model(new, past_key_values=cache, use_cache=True).logits[0]
        if rollback:
            cache.crop(min(keep + off_by_one - cache.get_seq_length(), 0))
        return logits

    checks.check_cache_step(step)
    with pytest.raises(checks.CheckFailed, match="holds .* tokens after your call"):
        checks.check_cache_step(lambda *a: step(*a, rollback=False))
    with pytest.raises(checks.CheckFailed, match="holds .* tokens after your call"):
        checks.check_cache_step(lambda *a: step(*a, off_by_one=-1))


def test_check_cells_show_the_feedback_not_a_traceback():
    err = checks.CheckFailed("f: 2 of 3 cases wrong:\n  case 1\n  case 2\nhint: look")
    assert err._render_traceback_() == ["✗ f: 2 of 3 cases wrong:", "  case 1", "  case 2", "hint: look"]


def test_check_sample_corrections_takes_the_residual_and_refuses_p_or_q():
    from specdec_course.correction import residual
    from specdec_course.course import hidden_checks

    def right(p, q, n, generator):
        return torch.multinomial(residual(p, q), n, replacement=True, generator=generator).tolist()

    checks.check_sample_corrections(right)
    hidden_checks.sample_corrections(right)
    for wrong, message in ((lambda p, q, n, g: torch.multinomial(p, n, replacement=True, generator=g).tolist(), "no probability"),
                           (lambda p, q, n, g: torch.multinomial(q, n, replacement=True, generator=g).tolist(), "no probability"),
                           (lambda p, q, n, g: [int(residual(p, q).argmax())] * n, "do not follow")):
        with pytest.raises(checks.CheckFailed, match=message):
            checks.check_sample_corrections(wrong)


def test_check_first_divergence_finds_the_draft_correction_bug_in_one_pass():
    from specdec_course.course import hidden_checks

    cases = checks.first_divergence_cases()
    assert any(expected is None for *_, expected in cases) and sum(expected is not None for *_, expected in cases) >= 4

    @torch.no_grad()
    def right(target, input_ids, tokens):
        sequence = torch.cat([input_ids, torch.tensor([list(tokens)])], dim=1)
        choices = target(sequence).logits[0, input_ids.shape[1] - 1:-1].argmax(-1).tolist()
        return next((i for i, (a, b) in enumerate(zip(tokens, choices)) if a != b), None)

    checks.check_first_divergence(right)
    hidden_checks.first_divergence(right)

    @torch.no_grad()
    def one_row_late(target, input_ids, tokens):  # row j read as the choice for position j itself
        sequence = torch.cat([input_ids, torch.tensor([list(tokens)])], dim=1)
        choices = target(sequence).logits[0, input_ids.shape[1]:].argmax(-1).tolist()
        return next((i for i, (a, b) in enumerate(zip(tokens, choices)) if a != b), None)

    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_first_divergence(one_row_late)

    def token_by_token(target, input_ids, tokens):
        for i, token in enumerate(tokens):
            if autoregressive_generate(target, torch.cat([input_ids, torch.tensor([tokens[:i]], dtype=torch.long)], 1), 1).tokens[0] != token:
                return i
        return None

    with pytest.raises(checks.CheckFailed, match="forward passes"):
        checks.check_first_divergence(token_by_token)


def test_check_choose_draft_weighs_alpha_against_cost():
    from specdec_course.course import hidden_checks

    checks.check_choose_draft(references.choose_draft)
    hidden_checks.choose_draft(references.choose_draft)

    def most_accurate(candidates, verify_ratio):
        name = max(candidates, key=lambda k: candidates[k][0])
        return references.choose_draft({name: candidates[name]}, verify_ratio)

    with pytest.raises(checks.CheckFailed, match="most accurate draft is not always the best"):
        checks.check_choose_draft(most_accurate)
    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_choose_draft(lambda candidates, verify_ratio: references.choose_draft(candidates, verify_ratio, taus=[1]))


def test_check_held_out_alpha_pools_answer_positions():
    """Exercise 08 Task 6: the reference passes, visible and hidden; averaging per answer or counting the prompt's
    positions is caught, each with its hint."""
    from specdec_course.course import hidden_checks
    from specdec_course.distill import label_accuracy

    checks.check_held_out_alpha(references.held_out_alpha)
    hidden_checks.held_out_alpha(references.held_out_alpha)

    def per_answer(draft, held_out):
        rows = zip(held_out["tokens"], held_out["labels"], held_out["prompt_lengths"])
        scores = [label_accuracy(draft, {"tokens": [t], "labels": [l], "prompt_lengths": [p]}) for t, l, p in rows]
        return sum(scores) / len(scores)

    with pytest.raises(checks.CheckFailed, match="mean of each answer"):
        checks.check_held_out_alpha(per_answer)
    with pytest.raises(checks.CheckFailed, match="prompt positions counted too"):
        checks.check_held_out_alpha(lambda draft, held_out: label_accuracy(draft, held_out, answers_only=False))
    with pytest.raises(checks.CheckFailed):
        hidden_checks.held_out_alpha(per_answer)


# ---------------------------------------------------------------- time estimates at the top of each exercise
TIME_ROW = re.compile(r"^\| (\d+) \| (.+?) \| (\d+) min \|$", re.M)
TOTAL = re.compile(r"^About (\d+) minutes in all\b", re.M)
SHORT_LAB = re.compile(r"about (\d+) minutes without (?:it|them)")
OPTIONAL_TASKS = re.compile(r"in a short lab Tasks? (\d+(?:(?:, | and )\d+)*) \(")
TASK_HEADING = re.compile(r"^## Task (\d+) ·", re.M)


def time_table_problems(nb: dict) -> list[str]:
    """What is wrong with the time table in a notebook's first cell: a row (with minutes) for every `## Task N`
    heading and no other, "About N minutes in all" equal to the rows' sum, and a short-lab figure (where given)
    equal to the sum without the tasks it calls optional, which must include every task beyond the chapter."""
    first = "".join(nb["cells"][0]["source"])
    headings = [int(n) for cell in nb["cells"] if cell["cell_type"] == "markdown"
                for n in TASK_HEADING.findall("".join(cell["source"]))]
    found = TIME_ROW.findall(first)
    rows = {int(n): int(minutes) for n, _, minutes in found}
    problems = []
    if len(found) != len(rows):
        problems.append(f"a task has more than one row: {[n for n, _, _ in found]}")
    if sorted(rows) != sorted(headings):
        problems.append(f"rows for tasks {sorted(rows)}, but the notebook's Task headings are {sorted(headings)}")
    totals = TOTAL.findall(first)
    if len(totals) != 1:
        return problems + [f"expected one line 'About N minutes in all' in the first cell, found {len(totals)}"]
    total = int(totals[0])
    if total != sum(rows.values()):
        problems.append(f"says about {total} minutes in all, the rows add up to {sum(rows.values())}")
    short = SHORT_LAB.search(first)
    optional = OPTIONAL_TASKS.search(first)
    beyond = {int(n) for n, what, _ in found if what.endswith("(beyond the chapter)")}
    named = {int(n) for n in re.findall(r"\d+", optional.group(1))} if optional else set()
    if beyond - named:
        problems.append(f"tasks {sorted(beyond - named)} go beyond the chapter but are not named optional for a short lab")
    if optional and not short:
        problems.append("names optional tasks without saying how long the rest takes")
    if short:
        without = int(short.group(1))
        if optional and without != total - sum(rows.get(n, 0) for n in named):
            problems.append(f"says about {without} minutes without tasks {sorted(named)}, "
                            f"the rows give {total - sum(rows.get(n, 0) for n in named)}")
        if not 0 < without < total:
            problems.append(f"a short lab of {without} minutes out of {total}")
    return problems


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_every_exercise_states_each_tasks_minutes_and_their_sum(path):
    assert time_table_problems(json.loads(path.read_text())) == []


def test_time_table_problems_catch_a_missing_row_and_a_wrong_sum():
    nb = json.loads((ROOT / "exercises" / "04_correction_and_the_full_loop.ipynb").read_text())
    first = "".join(nb["cells"][0]["source"])
    nb["cells"][0]["source"] = [first.replace("| 2 | the sequence after one step | 5 min |\n", "")]
    problems = time_table_problems(nb)
    assert any("Task headings are [1, 2, 3, 4, 5, 6]" in p for p in problems)
    assert any("the rows add up to 65" in p for p in problems)
    nb["cells"][0]["source"] = [first.replace("in a short lab Tasks 5 and 6", "in a short lab Task 5")]
    assert any("[6] go beyond the chapter" in p for p in time_table_problems(nb))
