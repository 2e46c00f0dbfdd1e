"""Exercises 00-05: the tasks beyond the chapters (00 Task 4, 01 Task 3, 02 Task 3, 03 Task 2 as a function, 05 Task 5)
and the hidden checks of every graded task: the solution passes the visible and the hidden check, the untouched stub
scores nothing, each named mistake fails with its name, and no hidden-check message gives away a hidden expected value.
"""
import json
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

import specdec_course as sc
from specdec_course.course import checks, exercises, hidden_checks, integrity, references
from specdec_course.models import noisy_copy

ROOT = Path(__file__).resolve().parent.parent


def _function(folder: str, exercise: str, cell_id: str, name: str):
    """The function ``name`` as the cell ``cell_id`` of ``folder``/``exercise`` defines it (solution or stub)."""
    nb = json.loads((ROOT / folder / f"{exercise}.ipynb").read_text())
    source = exercises._source(next(c for c in nb["cells"] if c["id"] == cell_id))
    source = "\n".join(line for line in source.split("\n") if line.strip() not in (exercises.BEGIN, exercises.END))
    namespace = {"torch": torch, "sc": sc, "checks": checks, "DynamicCache": DynamicCache}
    exec(compile(source, f"{exercise}:{cell_id}", "exec"), namespace)
    return namespace[name]


def _hidden_failure(checker, fn) -> str:
    with pytest.raises(checks.CheckFailed) as failed:
        checker(fn)
    message = str(failed.value)
    assert "expected" not in message.lower(), message
    return message


NEW_TASKS = [  # (exercise, solution cell, function, visible check, hidden check cell)
    ("00_autoregressive_generation", "c11", "sample_next_tokens", checks.check_sample_next_tokens, "c12"),
    ("01_greedy_draft_generation", "c08", "draft_tokens_fed", checks.check_draft_tokens_fed, "c09"),
    ("02_parallel_verification", "c08", "argmax_flips", checks.check_argmax_flips, "c09"),
    ("03_acceptance_rule", "c06", "by_hand", checks.check_by_hand, "0c08957b"),
    ("05_kv_caching", "c11", "cache_plan", checks.check_cache_plan, "c12"),
]


@pytest.mark.parametrize("exercise, cell_id, name, visible, check_cell", NEW_TASKS, ids=[t[2] for t in NEW_TASKS])
def test_the_solution_passes_and_the_stub_scores_nothing(exercise, cell_id, name, visible, check_cell, capsys):
    graded_name, hidden, points = hidden_checks.HIDDEN[exercise][check_cell]
    released = json.loads((ROOT / "exercises" / f"{exercise}.ipynb").read_text())
    check = next(c for c in released["cells"] if c["id"] == check_cell)
    assert graded_name == name and points == check["metadata"]["nbgrader"]["points"]  # as much as its visible check
    solution = _function("solutions", exercise, cell_id, name)
    visible(solution)
    hidden(solution)
    assert "✓" in capsys.readouterr().out
    stub = _function("exercises", exercise, cell_id, name)
    with pytest.raises(checks.NotAttempted):
        visible(stub)
    with pytest.raises(checks.CheckFailed):
        hidden(stub)
    assert name in integrity.WITHHELD[exercise]


def test_every_graded_task_of_00_to_05_has_a_hidden_check():
    from specdec_course.course import grading

    for exercise in ("00_autoregressive_generation", "01_greedy_draft_generation", "02_parallel_verification",
                     "03_acceptance_rule", "04_correction_and_the_full_loop", "05_kv_caching"):
        checked = {t.cell_id for t in grading.load_tasks(exercise) if t.kind == "check"}
        assert checked == set(hidden_checks.HIDDEN[exercise]), exercise
        assert set(integrity.WITHHELD[exercise]) == {name for name, _, _ in hidden_checks.HIDDEN[exercise].values()}


def test_the_withheld_functions_of_00_to_05_exist(tmp_path):
    for exercise in ("00_autoregressive_generation", "01_greedy_draft_generation", "02_parallel_verification",
                     "03_acceptance_rule", "05_kv_caching"):
        integrity.stripped_sources(exercise, tmp_path / exercise)  # raises on a name the package does not have


# --------------------------------------------------------------------------- 00 · sampling
def _sampler(*, scale=None, ignore_top_k=False, own_generator=False, greedy_at_zero=True):
    def sample(logits, temperature, top_k, n, generator):
        if temperature == 0 and greedy_at_zero:
            return [int(logits.argmax())] * n
        t = temperature or 1.0
        scaled = logits * t if scale == "multiply" else logits / t
        if top_k is not None and not ignore_top_k:
            cut = torch.topk(logits, top_k).values[-1]
            scaled = torch.where(logits >= cut, scaled, torch.tensor(-float("inf")))
        g = torch.Generator().manual_seed(0) if own_generator else generator
        return torch.multinomial(torch.softmax(scaled, -1), n, replacement=True, generator=g).tolist()
    return sample


def test_sampling_mistakes_are_named_in_both_checks():
    checks.check_sample_next_tokens(_sampler())
    hidden_checks.sample_next_tokens(_sampler())
    for wrong, name in ((_sampler(scale="multiply"), "multiplied the logits"), (_sampler(ignore_top_k=True), "top_k"),
                        (_sampler(own_generator=True), "generator"), (_sampler(greedy_at_zero=False), "greedy")):
        with pytest.raises(checks.CheckFailed, match=name):
            checks.check_sample_next_tokens(wrong)
        assert name in _hidden_failure(hidden_checks.sample_next_tokens, wrong)


# --------------------------------------------------------------------------- 01 · what the draft reads
def test_draft_tokens_fed_matches_a_hook_on_the_packages_own_loop():
    """The reference counts what a forward hook sees on the draft of a real speculative run, with and without a cache."""
    target, draft = sc.tiny_llama(3, peaked=2.0), noisy_copy(sc.tiny_llama(3, peaked=2.0), 0.2, 14)
    prompt, tau = torch.tensor([[5, 17, 42, 8]]), 3
    for use_cache in (False, True):
        lengths = []
        hook = draft.register_forward_pre_hook(
            lambda module, args, kwargs: lengths.append(int((args[0] if args else kwargs["input_ids"]).shape[1])),
            with_kwargs=True)
        try:
            run = sc.speculative_generate(target, draft, prompt, 40, tau=tau, use_cache=use_cache)
        finally:
            hook.remove()
        full = [step.n_accepted for step in run.steps if step.tau == tau]
        assert len(full) >= 5 and {0, tau} <= set(full)  # rejections and fully kept steps both happen
        expected = references.draft_tokens_fed(prompt.shape[1], tau, full, use_cache)
        assert lengths[:len(expected)] == expected
    assert references.draft_tokens_fed(5, 3, [3, 1], True) == [5, 1, 1, 2, 1, 1]
    assert references.draft_tokens_fed(5, 3, [3, 1], False) == [5, 6, 7, 9, 10, 11]


@pytest.mark.parametrize("flag", sorted(checks.FED_MISTAKES))
def test_draft_tokens_fed_mistakes_are_named_and_hidden_values_kept(flag):
    def wrong(prompt_length, tau, accepted, use_cache):
        return checks._fed(prompt_length, tau, accepted, use_cache, **{flag: True})

    with pytest.raises(checks.CheckFailed, match="expected") as failed:
        checks.check_draft_tokens_fed(wrong)
    assert checks.FED_MISTAKES[flag] in str(failed.value)
    message = _hidden_failure(hidden_checks.draft_tokens_fed, wrong)
    assert checks.FED_MISTAKES[flag] in message and "reads the wrong number of tokens" in message


# --------------------------------------------------------------------------- 02 · argmax flips
def test_flip_cases_hold_what_they_promise():
    for seed in range(20):
        one_pass, one_by_one, bound = checks.flip_case(seed, 6, 9, 1 + seed % 8, near=1, flip_at=seed % 6,
                                                       tie_at=(seed + 3) % 6)
        assert (one_pass - one_by_one).abs().max() <= bound
        assert torch.equal(one_pass * 128, (one_pass * 128).round())  # on the grid: every difference is exact
        top2 = one_pass.topk(2, dim=-1).values
        assert float(top2[(seed + 3) % 6, 0] - top2[(seed + 3) % 6, 1]) == 2 * bound
        assert int(one_pass[seed % 6].argmax()) != int(one_by_one[seed % 6].argmax())
        for logits in (one_pass, one_by_one):
            top = logits.topk(2, dim=-1).values
            assert bool((top[:, 0] > top[:, 1]).all())


def _flips(*, rule="2bound", last=False, offset=0):
    def flips(one_pass, one_by_one, bound):
        top2 = one_pass.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).tolist()
        test = {"2bound": lambda m: m <= 2 * bound, "bound": lambda m: m <= bound, "strict": lambda m: m < 2 * bound}[rule]
        rows = [i for i, m in enumerate(margin) if test(m)]
        could = (rows[-1] if last else rows[0] + offset) if rows else None
        differ = [i for i in range(one_pass.shape[0]) if int(one_pass[i].argmax()) != int(one_by_one[i].argmax())]
        return could, differ[0] if differ else None
    return flips


def test_argmax_flip_mistakes_are_named_and_hidden_values_kept():
    for wrong, name in ((_flips(rule="bound"), "EITHER way"), (_flips(rule="strict"), "≤, not <"),
                        (_flips(offset=1), "numbered from 0"), (_flips(last=True), "FIRST row")):
        with pytest.raises(checks.CheckFailed, match="expected") as failed:
            checks.check_argmax_flips(wrong)
        assert name in str(failed.value)
        message = _hidden_failure(hidden_checks.argmax_flips, wrong)
        assert "COULD differ) is wrong" in message and name in message
    always_none = lambda one_pass, one_by_one, bound: (_flips()(one_pass, one_by_one, bound)[0], None)  # noqa: E731
    assert "DOES differ" in _hidden_failure(hidden_checks.argmax_flips, always_none)
    with pytest.raises(checks.CheckFailed, match="a pair"):
        checks.check_argmax_flips(lambda one_pass, one_by_one, bound: 0)


# --------------------------------------------------------------------------- 03 · a step by hand, and the hidden checks
def test_by_hand_names_each_wrong_part_and_hides_hidden_answers():
    right = references.step_outcome
    checks.check_by_hand(right)
    with pytest.raises(checks.CheckFailed, match=r"token\(s\) \[3\]"):  # the worked case: token 3 passed
        checks.check_by_hand(lambda p, q, r: (["A"] * len(p), len(p), len(p) + 1))

    def stops_at_rejection(p, q, r):
        verdicts, n, appended = right(p, q, r)
        return verdicts[:n + 1], n, appended

    def no_bonus(p, q, r):
        verdicts, n, appended = right(p, q, r)
        return verdicts, n, n + 1 if n < len(p) else n

    for wrong, name in ((stops_at_rejection, "one \"A\" or \"R\" per draft token"), (no_bonus, "bonus token")):
        with pytest.raises(checks.CheckFailed, match=name):
            checks.check_by_hand(wrong)
        assert name in _hidden_failure(hidden_checks.by_hand, wrong)
    message = _hidden_failure(hidden_checks.by_hand, lambda p, q, r: (right(p, q, r)[0][::-1], *right(p, q, r)[1:]))
    assert "some verdicts are not the rule's" in message and "token(s)" not in message


def test_hidden_checks_of_03_name_mistakes_without_the_answer():
    counts_all = lambda p, q, r: sum(pt >= qt or rt <= pt / qt for pt, qt, rt in zip(p, q, r))  # noqa: E731
    assert "stop at the first rejection" in _hidden_failure(hidden_checks.textbook_accept, counts_all)
    no_min = lambda p, q: float(torch.where(q > 0, p, torch.zeros_like(p)).sum())  # noqa: E731
    message = _hidden_failure(hidden_checks.acceptance_rate, no_min)
    index = int(message.split("#")[1].split(":")[0])
    p, q = hidden_checks._acceptance_hidden_cases()[index]
    assert f"{float(torch.minimum(p, q).sum()):.4f}" not in message

    def from_p(p, q, n, generator):
        drafts = torch.multinomial(p, n, replacement=True, generator=generator)
        r = torch.rand(n, generator=generator)
        return float(((p[drafts] >= q[drafts]) | (r <= p[drafts] / q[drafts])).float().mean())

    message = _hidden_failure(hidden_checks.simulate_acceptance, from_p)
    assert "drawn from p" in message and " = 0." not in message


# --------------------------------------------------------------------------- 00, 01, 04, 05 · hidden checks of the chapter tasks
def test_hidden_checks_of_the_chapter_tasks_keep_their_answers():
    def next_token_first_position(model, ids):
        return int(model(ids).logits[0, 0].argmax())

    assert "LAST position" in _hidden_failure(hidden_checks.greedy_next_token, next_token_first_position)

    def off_by_one(model, ids, n):
        tokens = sc.autoregressive_generate(model, ids, n).tokens
        return tokens[:1] + [(t + 1) % model.config.vocab_size for t in tokens[1:]]

    assert "wrong tokens from position 1" in _hidden_failure(hidden_checks.greedy_generate, off_by_one)

    def prefix_only(draft, ids, tau):
        return [int(draft(ids).logits[0, -1].argmax())] * tau

    assert "conditioned on the draft tokens" in _hidden_failure(hidden_checks.draft_tokens, prefix_only)
    assert "row n − 1" in _hidden_failure(hidden_checks.greedy_correction, lambda p, n: int(p[max(n - 1, 0)].argmax()))
    assert "not the prefix" in _hidden_failure(hidden_checks.sequence_after_step,
                                               lambda prefix, drafts, n, c: prefix + drafts[:n + 1] + [c])

    def one_row_late(target, input_ids, tokens):
        sequence = torch.cat([input_ids, torch.tensor([list(tokens)])], dim=1)
        with torch.no_grad():
            choices = target(sequence).logits[0, input_ids.shape[1]:].argmax(-1).tolist()
        return next((i for i, (a, b) in enumerate(zip(tokens, choices)) if a != b), None)

    assert "first leave the target's greedy choice" in _hidden_failure(hidden_checks.first_divergence, one_row_late)
    assert "KV heads, not the query heads" in _hidden_failure(
        hidden_checks.kv_bytes_per_token,
        lambda config, size: 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * size)

    def no_rollback(model, cache, new, keep):
        with torch.no_grad():
            return model(new, past_key_values=cache, use_cache=True).logits[0]

    assert "not the `keep` it was given" in _hidden_failure(hidden_checks.cache_step, no_rollback)


def test_hidden_check_of_the_loop_keeps_its_answer():
    from test_exercises import _reference_loop

    message = _hidden_failure(hidden_checks.speculative_greedy, _reference_loop(correct_from_draft=True))
    assert "not the target's greedy output: wrong tokens from position" in message


# --------------------------------------------------------------------------- 05 · sizing another model's cache
def test_cache_plan_mistakes_are_named_and_hidden_values_kept():
    def plan(config, batch, budget, *, heads=False, one=False, no_batch=False, per_kv=False, ceil=False):
        h = config["num_attention_heads"]
        kv = h if heads else config.get("num_key_value_heads") or h
        dim = config.get("head_dim") or config["hidden_size"] // (kv if per_kv else h)
        per = (1 if one else 2) * config["num_hidden_layers"] * kv * dim * references.DTYPE_BYTES[config["torch_dtype"]]
        per *= 1 if no_batch else batch
        return per, -(-budget // per) if ceil else budget // per

    checks.check_cache_plan(plan)
    for flag, name in (("heads", "KEY-VALUE heads"), ("one", "keys AND values"), ("no_batch", "times the batch"),
                       ("per_kv", "hidden_size / num_attention_heads"), ("ceil", "round down")):
        wrong = lambda config, batch, budget, flag=flag: plan(config, batch, budget, **{flag: True})  # noqa: E731
        with pytest.raises(checks.CheckFailed, match=name):
            checks.check_cache_plan(wrong)
        message = _hidden_failure(hidden_checks.cache_plan, wrong)
        assert name in message and "131072" not in message and "131,072" not in message  # the first hidden case's
    assert references.cache_plan({"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                                  "hidden_size": 576, "torch_dtype": "float32"}, 1, 10 ** 6) == (46080, 21)
