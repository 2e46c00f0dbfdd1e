"""Graded work is the learner's own: a graded function that is, calls or wraps the course's answer to its task scores 0
with the reason, whatever the learner's kernel does; every solution scores full marks and every untouched exercise 0
in the same sandbox.

Two layers (``integrity.py``): the grader reads the notebook's code (alias, wrapper, ``import ... as``, getattr by a
string, a library shortcut), and the sandboxed kernel has the course package with the graded tasks' references made
stubs (so code the reading cannot follow, such as ``exec``, fails too). One grading run holds every exercise solved
and untouched and the hostile notebooks.
"""
import ast
import json
import re
import time
from pathlib import Path

import pytest

from specdec_course.course import grading, hidden_checks, integrity, sandbox
from test_grade import NO_SANDBOX, ROOT, _released, _solved, _write

EXERCISES = grading.exercise_names()


def _graded_names(exercise):
    names = set()
    for task in grading.load_tasks(exercise):
        names.update(grading._graded_names(task, exercise))
    return names


def _with_definition(exercise, replacements: dict, *, before: str = ""):
    """The released ``exercise`` with the stub cell that defines each name in ``replacements`` replaced by its source
    (the other tasks left as released); ``before`` goes into the first such cell above it."""
    nb = _released(exercise)
    for name, source in replacements.items():
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and
                    re.search(rf"^(def|class) {name}\b", "".join(c["source"]), re.M))
        cell["source"] = before + source
        before = ""
    return nb


# (learner, exercise, {graded name: its source}, the names that must score 0, what the reason says)
HOSTILE = [
    ("alias01", "01_greedy_draft_generation",
     {"draft_tokens": "import specdec_course as sc\ndraft_tokens = sc.draft_tokens\n"},
     "specdec_course.draft_tokens"),
    ("import_as03", "03_acceptance_rule",
     {"textbook_accept": "from specdec_course.accept import consecutive_accepted as count\n\n"
                         "def textbook_accept(p, q, r):\n"
                         "    return count([a >= b or c <= a / b for a, b, c in zip(p, q, r)])\n"},
     "specdec_course.accept.consecutive_accepted"),
    ("wrapper04", "04_correction_and_the_full_loop",
     {"greedy_correction": "import specdec_course as sc\n\ndef greedy_correction(p, n):\n"
                           "    return sc.correction_token(p, p[:-1], n)\n",
      "speculative_greedy": "def speculative_greedy(target, draft, input_ids, max_new_tokens, tau):\n"
                            "    run = sc.speculative_generate(target, draft, input_ids, max_new_tokens, tau=tau, use_cache=False)\n"
                            "    return run.tokens, run.target_passes\n"},
     "specdec_course.correction_token|specdec_course.speculative_generate"),
    ("getattr10", "10_token_trees",
     {"tree_mask": "import specdec_course as sc\nname = 'tree' + '_mask'\n\ndef tree_mask(parents, prefix_length):\n"
                   "    return getattr(sc.tree, name)(parents, prefix_length)\n",
      "longest_accepted_path": "from specdec_course.course import references\n"
                               "longest_accepted_path = references.tree_walk\n"},
     "computed name|grader's own answers"),
]
# answers that are not the learner's measurement, diagnosis or drafter: (learner, exercise, {name: source},
# {graded name: points of its visible check, or None when only the hidden check is asserted})
CHEATS = [
    ("constants06", "06_performance_analysis",
     {"measure_target_ms": "def measure_target_ms(model, ks):\n    return {k: 40.0 + 3.0 * (k - 1) for k in ks}\n"},
     {"measure_target_ms": 0}),
    ("lookup07", "07_control_and_production",  # the visible traces' contents, as the notebook's own set-up made them
     {"diagnose": "from pathlib import Path\nLABELS = {'healthy': 'none', 'no_chat_template': 'prompt_mismatch', "
                  "'slow_draft': 'slow_draft', 'token_by_token_verification': 'verification_not_one_pass', "
                  "'slow_kernels': 'slow_kernels', 'stale_cache': 'stale_cache'}\n\n"
                  "def diagnose(trace_path):\n    data = Path(trace_path).read_bytes()\n"
                  "    return next((LABELS[f] for f, p in traces.items() if Path(p).read_bytes() == data), 'none')\n"},
     {"diagnose": None}),
    ("trivial09", "09_choosing_a_drafter",
     {"ContextBigramDrafter": "import torch\nfrom specdec_course.draft import Draft\n\n"
                              "class ContextBigramDrafter(Drafter):\n    name = 'always token 0'\n\n"
                              "    def __init__(self, vocab_size):\n        self._vocab_size = vocab_size\n\n"
                              "    @property\n    def vocab_size(self):\n        return self._vocab_size\n\n"
                              "    def propose(self, sequence, tau, *, temperature=0.0, generator=None):\n"
                              "        q = torch.zeros(tau, self._vocab_size)\n        q[:, 0] = 1.0\n"
                              "        return Draft(tokens=[0] * tau, q=q)\n"},
     {"ContextBigramDrafter": 0}),
]
# code the grader cannot read: only the withheld stub stops it
EXEC = ("exec01", "01_greedy_draft_generation",
        {"draft_tokens": "import specdec_course as sc\n"
                         "exec('def draft_' + 'tokens(draft, input_ids, tau):\\n    return sc.draft_tokens(draft, input_ids, tau)')\n"})


def test_every_graded_function_has_its_withheld_list_and_every_entry_exists(tmp_path):
    for exercise in EXERCISES:
        assert set(integrity.WITHHELD.get(exercise, {})) >= _graded_names(exercise), exercise
        stripped = integrity.stripped_sources(exercise, tmp_path / exercise)
        for module, names in integrity.withheld(exercise).items():
            text = Path(stripped[str(integrity._module_path(module))]).read_text()
            ast.parse(text)
            for name in names:
                stub = re.search(rf"^(def|class) {name}\b.*\n(.*\n){{0,2}}", text, re.M)
                assert stub and f"raise {integrity.WITHHELD_ERROR}(" in stub.group(0), (exercise, module, name)


def test_a_stripped_module_keeps_everything_but_the_withheld_answers(tmp_path):
    text = integrity.stripped_source("draft", {"draft_tokens": "draft_tokens"})
    namespace = {"__name__": "specdec_course.draft", "__package__": "specdec_course"}
    exec(compile(text, "draft.py", "exec"), namespace)  # noqa: S102 - the course's own module, stripped
    assert namespace["distribution"] is not None and namespace["Draft"].__dataclass_fields__
    with pytest.raises(RuntimeError, match="course's own answer to draft_tokens"):
        namespace["draft_tokens"](None, None, 3)
    with pytest.raises(ValueError, match="no such top-level function"):
        integrity.stripped_source("draft", {"no_such_function": "x"})


READ_CASES = {
    "alias": ["import specdec_course as sc", "draft_tokens = sc.draft_tokens"],
    "wrapper": ["import specdec_course as sc", "def draft_tokens(d, p, tau):\n    return sc.draft_tokens(d, p, tau).tokens"],
    "import-as": ["from specdec_course.draft import draft_tokens as mine\n\ndef draft_tokens(d, p, t):\n    return mine(d, p, t)"],
    "getattr by a string": ["import specdec_course as sc", "def draft_tokens(d, p, t):\n    return getattr(sc, 'draft_tokens')(d, p, t)"],
    "getattr by a computed string": ["import specdec_course as sc",
                                     "def draft_tokens(d, p, t):\n    return getattr(sc, 'draft_' + 'tokens')(d, p, t)"],
    "a helper of the learner's": ["import specdec_course as sc", "def helper(*a):\n    return sc.generation.autoregressive_generate(*a)",
                                  "def draft_tokens(d, p, t):\n    return helper(d, p, t).tokens"],
    "a star import": ["from specdec_course.generation import *", "def draft_tokens(d, p, t):\n    return autoregressive_generate(d, p, t)"],
    "import_module": ["import importlib", "def draft_tokens(d, p, t):\n    m = importlib.import_module('specdec_course.draft')\n"
                                          "    return m.draft_tokens(d, p, t)"],
    "eval": ["def draft_tokens(d, p, t):\n    return eval('sc.draft_tokens')(d, p, t)"],
    "a magic in another cell": ["%load_ext autoreload\nimport specdec_course as sc", "draft_tokens = sc.draft_tokens"],
}


@pytest.mark.parametrize("case", READ_CASES)
def test_reading_the_code_finds_each_way_of_delegating(case):
    found = integrity.delegations(READ_CASES[case], "01_greedy_draft_generation")
    assert set(found) == {"draft_tokens"}, found
    assert "draft_tokens" in found["draft_tokens"]


def test_reading_the_code_passes_own_work_and_other_tasks_course_calls():
    own = ["import specdec_course as sc", "import torch",
           "def draft_tokens(draft, input_ids, tau):\n    out = []\n    for _ in range(tau):\n"
           "        out.append(int(draft(input_ids).logits[0, -1].argmax()))\n    return out",
           "reference = sc.draft_tokens  # used outside the graded function: not graded"]
    assert integrity.delegations(own, "01_greedy_draft_generation") == {}
    # the definition in effect is the last one: an alias tried first and then replaced by the learner's own is no longer read
    replaced = ["import specdec_course as sc", "draft_tokens = sc.draft_tokens", own[2]]
    assert integrity.delegations(replaced, "01_greedy_draft_generation") == {}
    assert integrity.delegations(replaced[:1] + replaced[2:] + replaced[1:2], "01_greedy_draft_generation")
    # exercise 04's loop may build on drafting and verifying (other chapters' tasks), not on the whole loop
    loop = ["import specdec_course as sc", "def speculative_greedy(target, draft, ids, n, tau):\n"
            "    drafts = sc.draft_tokens(draft, ids, tau).tokens\n    p = sc.verify(target, ids, drafts)\n    return drafts, 1"]
    assert integrity.delegations(loop, "04_correction_and_the_full_loop") == {}
    shortcut = ["def greedy_generate(model, ids, n):\n    return model.generate(ids, max_new_tokens=n)[0].tolist()"]
    assert "generate" in integrity.delegations(shortcut, "00_autoregressive_generation")["greedy_generate"]


def test_the_sandbox_hides_the_answers_and_shows_the_stripped_package(tmp_path):
    withheld = integrity.stripped_sources("01_greedy_draft_generation", tmp_path / "w")
    text = " ".join(sandbox.bwrap_command([str(tmp_path / "shared")], [], 64, withheld))
    package = ROOT / "specdec_course"
    for name in integrity.GRADER_ONLY:  # importable, and empty
        copy = Path(withheld[str(package / name)]).read_text()
        assert "def " not in copy and "class " not in copy and "import" not in copy
    for original, stripped in withheld.items():
        assert f"--ro-bind {stripped} {original}" in text
    for entry in ("solutions", "notebooks", "tests", "exercises", ".git"):
        if (ROOT / entry).exists():
            assert f"--tmpfs {ROOT / entry}" in text
    assert f"--tmpfs {package}" not in text


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if NO_SANDBOX is not None:
        pytest.skip(f"grading runs notebooks in a bubblewrap sandbox and {NO_SANDBOX}")
    subs = tmp_path_factory.mktemp("integrity") / "submissions"
    for exercise in EXERCISES:
        _write(subs, "solution", _solved(exercise=exercise), exercise)
        _write(subs, "untouched", _released(exercise), exercise)
    for learner, exercise, replacements, _ in HOSTILE:
        _write(subs, learner, _with_definition(exercise, replacements), exercise)
    for learner, exercise, replacements, _ in CHEATS:
        _write(subs, learner, _with_definition(exercise, replacements), exercise)
    learner, exercise, replacements = EXEC
    _write(subs, learner, _with_definition(exercise, replacements), exercise)
    start = time.monotonic()
    rows = grading.grade(subs, timeout=600, out=subs.parent / "grades.csv", log=lambda *args: None, memory_mb=4096)
    return {"rows": rows, "seconds": time.monotonic() - start}


def _rows(graded, learner, exercise=None):
    """The automatically graded rows (not the notebook's, not the answers in words that wait for a score by hand)."""
    return [r for r in graded["rows"] if r["learner"] == learner and (exercise is None or r["exercise"] == exercise)
            and r["task"] != grading.NOTEBOOK and r["points"] != ""]


def _notebook(graded, learner, exercise):
    return next(r["message"] for r in graded["rows"] if r["learner"] == learner and r["exercise"] == exercise
                and r["task"] == grading.NOTEBOOK)


def test_every_solution_scores_full_marks_in_the_sandbox_without_an_error(graded):
    for exercise in EXERCISES:
        rows = _rows(graded, "solution", exercise)
        assert rows, exercise
        wrong = [(r["task"], r["message"]) for r in rows if r["points"] != r["max_points"]]
        assert not wrong, (exercise, wrong)
        assert re.fullmatch(r"ran in a sandbox in [0-9.]+ s", _notebook(graded, "solution", exercise)), exercise


def test_every_untouched_exercise_scores_zero_not_attempted_and_its_other_cells_run(graded):
    """The stubs are what fails: every check says "not attempted", and no set-up or task cell raises (in the sandbox,
    where the graded tasks' course functions are withheld: no cell a learner is given may need them)."""
    for exercise in EXERCISES:
        rows = _rows(graded, "untouched", exercise)
        assert rows and all(r["points"] == 0 and r["message"] == "not attempted" for r in rows), \
            (exercise, [(r["task"], r["message"]) for r in rows if r["message"] != "not attempted"])
        assert re.fullmatch(r"ran in a sandbox in [0-9.]+ s", _notebook(graded, "untouched", exercise)), \
            (exercise, _notebook(graded, "untouched", exercise))


@pytest.mark.parametrize("learner, exercise, replacements, reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_delegating_scores_zero_on_its_task_with_the_reason(graded, learner, exercise, replacements, reason):
    rows = _rows(graded, learner)
    hit = [r for r in rows if set(grading._graded_names(_task(exercise, r["task"]), exercise)) & set(replacements)]
    assert len(hit) >= 2 * len(replacements)  # each task's check and its hidden check
    for row in hit:
        assert row["points"] == 0 and "delegates to the course" in row["message"], row
        assert re.search(reason, row["message"]), row["message"]


@pytest.mark.parametrize("learner, exercise, replacements, visible", CHEATS, ids=[c[0] for c in CHEATS])
def test_constants_a_lookup_and_a_trivial_drafter_score_zero_on_the_hidden_check(graded, learner, exercise,
                                                                                replacements, visible):
    rows = _rows(graded, learner)
    for name, points in visible.items():
        hit = [r for r in rows if name in grading._graded_names(_task(exercise, r["task"]), exercise)]
        hidden = [r for r in hit if r["task"].endswith("(hidden check)")]
        assert hidden and all(r["points"] == 0 and r["message"].startswith("CheckFailed") for r in hidden), hidden
        if points is not None:
            assert all(r["points"] == points for r in hit if r not in hidden), hit


def test_code_the_grader_cannot_read_still_finds_the_answer_withheld(graded):
    learner, exercise, replacements = EXEC
    hit = [r for r in _rows(graded, learner)
           if set(grading._graded_names(_task(exercise, r["task"]), exercise)) & set(replacements)]
    assert hit and all(r["points"] == 0 and "withheld while grading" in r["message"] for r in hit), hit


def _task(exercise, name):
    return next(t for t in grading.load_tasks(exercise) if t.name == name)


def test_the_hidden_checks_are_registered_for_every_graded_task():
    for exercise in EXERCISES:
        checked = {t.cell_id for t in grading.load_tasks(exercise) if t.kind == "check"}
        assert checked <= set(hidden_checks.HIDDEN.get(exercise, {})), (exercise, checked - set(hidden_checks.HIDDEN.get(exercise, {})))


def test_reference_answers_are_not_importable_from_checks():
    from specdec_course.course import checks

    tree = ast.parse(Path(checks.__file__).read_text())
    bound = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module and "references" in node.module for alias in node.names}
    assert not bound, f"checks binds reference answers at import time: {bound}"
    assert json.dumps(sorted(integrity.GRADER_ONLY))
