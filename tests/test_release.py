"""The learners' copy of the course (``python -m specdec_course release``): what is in it, what is not, and that its
exercises run on answer keys in place of the reference answers."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specdec_course.course import answer_keys, checks, release
from specdec_course.course.exercises import BEGIN, END, strip_solutions

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
GRADER_ONLY = ("references.py", "hidden_checks.py", "integrity.py")
LEFT_OUT = {"solutions", "tests", "INSTRUCTORS.md", ".ci", ".git", "build", ".venv", ".pytest_cache", "__pycache__",
            ".ipynb_checkpoints", "requirements-test.txt"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    dest = tmp_path_factory.mktemp("release") / "course"
    lines = []
    written = release.build(dest, log=lines.append)
    return dest, written, lines


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _env(dest: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(dest), "SPECDEC_QUICK": "1", "HF_HUB_OFFLINE": "1"}


# --------------------------------------------------------------------------- (a) what is in it
def test_the_release_has_what_learners_need_and_nothing_else(made):
    dest, written, _ = made
    listing = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert set(written) | {release.MARKER} == set(listing)
    top = {p.name for p in dest.iterdir()}
    assert top == {"README.md", "Makefile", "requirements.txt", "pyproject.toml", "notebooks", "exercises",
                   "benchmarks", "specdec_course", release.MARKER}
    for folder in ("notebooks", "exercises"):
        assert {p.name for p in (dest / folder).iterdir()} == {p.name for p in (ROOT / folder).glob("*.ipynb")}
    for name in ("bench_cpu_eval_quick.json", "bench_h200.json", "acceptance_eval.json"):  # what the chapters read
        assert (dest / "benchmarks" / name).read_bytes() == (ROOT / "benchmarks" / name).read_bytes()
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "specdec_course").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name not in GRADER_ONLY}
    assert package <= set(listing)  # every module, the prompt data, the draft and the head
    assert (dest / release.KEYS_FILE).is_file() and (dest / "specdec_course/course/references.py").is_file()
    assert not any((dest / "specdec_course/course" / name).exists() for name in GRADER_ONLY[1:])
    assert not [path for path in listing if LEFT_OUT & set(path.split("/")) or path.endswith(".pyc")]
    assert "answer_keys.pt" in (dest / "pyproject.toml").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_the_learners_makefile_and_readme(made):
    dest = made[0]
    run = subprocess.run(["make", "-n", "-C", str(dest), "setup", "lab", "lab-headless", "doctor", "check", "EX=04"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for command in ("pip install --quiet --disable-pip-version-check -r requirements.txt", "jupyter lab",
                    "--no-browser", "-m specdec_course doctor", "-m specdec_course check 04"):
        assert command in run.stdout
    assert "test:" not in (dest / "Makefile").read_text()
    readme = (dest / "README.md").read_text()
    for needed in ("make lab", "make check EX=04", "make doctor", "exercises/10_token_trees.ipynb",
                   "notebooks/00_autoregressive_generation.ipynb"):
        assert needed in readme
    assert not re.search(r"solutions/|hidden check|references|INSTRUCTORS|rubric", readme, re.IGNORECASE)


# --------------------------------------------------------------------------- (b) nothing leaked
def _nontrivial(line: str) -> bool:
    line = line.strip()
    return len(line) >= 16 and not line.startswith("#") and not re.match(r"(import |from \S+ import )", line)


def _solution_blocks():
    """(exercise, cell id, cell type, the lines between the markers) of every solution block."""
    for path in SOLUTIONS:
        for cell in json.loads(path.read_text())["cells"]:
            inside, lines = False, []
            for line in _source(cell).split("\n"):
                if line.strip() == BEGIN:
                    inside, lines = True, []
                elif line.strip() == END:
                    inside = False
                    yield path.stem, cell.get("id"), cell["cell_type"], lines
                elif inside:
                    lines.append(line.strip())


def _given() -> str:
    """What learners are given on purpose: the package's modules (it implements the course), the chapters, and each
    exercise's statement (the solution notebooks with their solution blocks stripped)."""
    parts = [p.read_text() for p in (ROOT / "specdec_course").rglob("*.py") if p.name not in GRADER_ONLY]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")) + SOLUTIONS:
        for cell in json.loads(path.read_text())["cells"]:
            text = _source(cell)
            parts.append(strip_solutions(text, markdown=cell["cell_type"] == "markdown") if BEGIN in text else text)
    return "\n".join(parts)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def _texts(dest: Path) -> dict:
    """Every file of the release as text (notebooks and JSON also as their decoded strings, binary files as Latin-1,
    which keeps any ASCII in them as it is)."""
    texts = {}
    for path in dest.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            text = data.decode()
        except UnicodeDecodeError:
            texts[path.relative_to(dest).as_posix()] = data.decode("latin-1")
            continue
        if path.suffix in (".ipynb", ".json"):
            text += "\n" + "\n".join(_strings(json.loads(text)))
        texts[path.relative_to(dest).as_posix()] = text
    return texts


def test_no_solution_rubric_or_reference_text_anywhere_in_the_release(made):
    texts = _texts(made[0])
    assert len(texts) > 100 and any(name.endswith(".ipynb") for name in texts)
    given = _given()
    blocks = list(_solution_blocks())
    code = [(ex, cell, line) for ex, cell, kind, lines in blocks if kind == "code" for line in lines if _nontrivial(line)]
    distinctive = [row for row in code if row[2] not in given]  # the rest is the package's own code or a chapter's
    assert len(distinctive) >= 0.75 * len(code)
    leaks = [(ex, cell, line, name) for ex, cell, line in distinctive for name, text in texts.items() if line in text]
    assert not leaks, leaks[:5]

    rubrics = [(ex, cell, line) for ex, cell, kind, lines in blocks if kind == "markdown" for line in lines
               if _nontrivial(line)]
    assert len(rubrics) >= 11 and all(line not in given for _, _, line in rubrics)
    assert not [(name, row) for row in rubrics for name, text in texts.items() if row[2] in text]
    assert not [name for name, text in texts.items() if re.search(r"Rubric \(\d", text)]

    reference = [line.strip() for line in (ROOT / "specdec_course/course/references.py").read_text().split("\n")
                 if _nontrivial(line) and line.strip() not in given]
    assert len(reference) >= 100
    assert not [(name, line) for line in reference for name, text in texts.items() if line in text]


# --------------------------------------------------------------------------- (c) the exercises run on answer keys
def _solved(exercise: Path) -> dict:
    """The release's exercise with the solution put back, cell by cell (matched by id), and a last cell that says
    where the package came from."""
    nb = json.loads(exercise.read_text())
    solution = {c.get("id"): c for c in json.loads((ROOT / "solutions" / exercise.name).read_text())["cells"]}
    for cell in nb["cells"]:
        theirs = solution.get(cell.get("id"))
        if theirs is not None and BEGIN in _source(theirs):
            cell["source"] = theirs["source"]
    nb["cells"].append({"cell_type": "code", "id": "where", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": "import specdec_course\nprint(specdec_course.__file__, checks.references.__file__)"})
    return nb


def test_every_exercise_of_the_release_passes_its_checks_with_the_solutions(made):
    """All eleven, one after another, each in a fresh kernel that imports the release's package (quick mode)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    dest = made[0]
    problems, ran = [], 0
    for exercise in sorted((dest / "exercises").glob("*.ipynb")):
        nb = nbformat.reads(json.dumps(_solved(exercise)), as_version=4)
        client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(dest)}})
        try:
            client.execute(env=_env(dest))
        except CellExecutionError as err:
            problems.append(f"{exercise.name}: {str(err)[-600:]}")
            continue
        ran += 1
        where = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        if where.split() != [str(dest / "specdec_course/__init__.py"), str(dest / "specdec_course/course/references.py")]:
            problems.append(f"{exercise.name}: the kernel imported {where!r}, not the release's package")
        for cell in nb.cells:
            if "check" in cell.metadata.get("tags", []):
                printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
                if "✓" not in printed:
                    problems.append(f"{exercise.name} cell {cell.get('id')}: no ✓ line ({printed[-200:]!r})")
    assert not problems, "\n".join(problems)
    assert ran == len(SOLUTIONS) == 11


def test_untouched_exercises_are_not_attempted_in_the_release_not_missing_keys(made, tmp_path):
    """The learner's self-check, run in the release on untouched exercises whose checks read answer keys before
    they call the learner's function (09) and after (10)."""
    dest = made[0]
    for name in ("09_choosing_a_drafter", "10_token_trees"):
        shutil.copy(dest / "exercises" / f"{name}.ipynb", tmp_path / f"{name}.ipynb")
    run = subprocess.run([sys.executable, "-m", "specdec_course", "check", "--folder", str(tmp_path)], cwd=dest,
                         env=_env(dest), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.split("\n") if "Task " in line and "written" not in line]
    assert len(rows) == 7 and all("not attempted" in row for row in rows), run.stdout
    assert "0 of 7 checks passed" in run.stdout and "MissingAnswerKey" not in run.stdout


# --------------------------------------------------------------------------- (d) the replay answers only the checks' calls
def test_the_replay_answers_recorded_calls_and_refuses_any_other(made):
    dest = made[0]
    script = """
from specdec_course.course import references
from specdec_course.course.answer_keys import MissingAnswerKey
import torch
assert references.__file__.startswith({dest!r}), references.__file__
print(references.continuation([1, 2, 3, 9, 1, 2, 3], 3, 3, oldest=True))
p = torch.tensor([0.8, 0.5, 0.1, 0.6, 0.9])
logits = torch.randn(8, generator=torch.Generator().manual_seed(0)) * 2
print(references.sampling_distribution(logits * (1 + 1e-9), 1.0, None).sum().item())  # a last-bits difference
for call in (lambda: references.continuation([1, 2, 3], 2, 3), lambda: references.tree_walk([5], [-1], [5, 7]),
             lambda: references.sampling_distribution(logits * 1.01, 1.0, None),
             lambda: references.cache_plan({{"num_hidden_layers": 1}}, 1, 10)):
    try:
        call()
        print("answered")
    except MissingAnswerKey as err:
        print("refused:", str(err).split(" answers only the calls the visible checks make")[0])
try:
    references.shape_value
except AttributeError as err:
    print("no such key:", err)
""".format(dest=str(dest))
    run = subprocess.run([sys.executable, "-c", script], cwd=dest, env=_env(dest), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().split("\n")
    assert lines[0] == "[9, 1, 2]" and abs(float(lines[1]) - 1) < 1e-9
    assert lines[2:6] == [f"refused: references.{name}" for name in
                          ("continuation", "tree_walk", "sampling_distribution", "cache_plan")]
    assert lines[6].startswith("no such key: references.shape_value: not in this copy of the course")


@pytest.fixture()
def replayed(made, monkeypatch):
    """``checks`` reading the release's answer keys, in this process."""
    keys = answer_keys.AnswerKeys.load(made[0] / release.KEYS_FILE)
    monkeypatch.setattr(checks, "references", answer_keys.Replay(keys))
    return keys


def test_every_name_the_checks_read_has_keys(replayed):
    names = release.reference_readers((ROOT / "specdec_course/course/checks.py").read_text())[1]
    assert names and names <= set(replayed.functions) | set(replayed.constants)


def _solution(exercise: str) -> dict:
    return release.definitions(json.loads((ROOT / "solutions" / f"{exercise}.ipynb").read_text()), exercise)


def test_the_hints_after_a_wrong_answer_work_from_the_keys(replayed):
    def oldest(tokens, tau, max_ngram=3):
        for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
            for start in range(0, len(tokens) - n):
                if tokens[start:start + n] == tokens[len(tokens) - n:]:
                    return tokens[start + n:start + n + tau]
        return []

    with pytest.raises(checks.CheckFailed, match="OLDEST occurrence"):
        checks.check_find_continuation(oldest)
    mine = _solution("09_choosing_a_drafter")
    speedup = mine["drafter_speedup"]

    def mean_of_speedups(alphas, c, tau, curve, mix):
        return sum(share * speedup(alphas[k], c, tau, curve) for k, share in mix.items() if share)

    with pytest.raises(checks.CheckFailed, match="share-weighted mean of the kinds' speedups"):
        checks.check_mix_speedup(speedup, mean_of_speedups)

    class FirstFollower(mine["ContextBigramDrafter"]):
        def propose(self, sequence, tau, *, temperature=0.0, generator=None):
            tokens, follows = sequence[0].tolist(), {}
            for before, after in zip(tokens, tokens[1:]):
                follows.setdefault(before, after)
            proposal, last = [], tokens[-1]
            while len(proposal) < tau and last in follows:
                last = follows[last]
                proposal.append(last)
            q = torch.zeros(len(proposal), self.vocab_size)
            q[torch.arange(len(proposal)), torch.tensor(proposal, dtype=torch.long)] = 1.0
            return mine["Draft"](tokens=proposal, q=q)

    with pytest.raises(checks.CheckFailed, match="FIRST followers"):
        checks.check_own_drafter(FirstFollower)

    def query_heads(config, batch, budget):
        size = {"float32": 4, "float16": 2, "bfloat16": 2}[config["torch_dtype"]]
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        per = 2 * config["num_hidden_layers"] * config["num_attention_heads"] * head_dim * size * batch
        return per, budget // per

    with pytest.raises(checks.CheckFailed, match="count the KEY-VALUE heads"):
        checks.check_cache_plan(query_heads)


def test_a_hint_without_its_key_is_left_out_not_a_crash(replayed, monkeypatch):
    keys = answer_keys.AnswerKeys({k: v for k, v in replayed.functions.items() if k != "continuation"},
                                  replayed.constants)
    monkeypatch.setattr(checks, "references", answer_keys.Replay(keys))

    def oldest_first(tokens, tau, max_ngram=3):
        return [] if len(tokens) < 2 else [tokens[0]] * min(tau, 1)

    with pytest.raises(checks.CheckFailed) as failed:
        checks.check_find_continuation(oldest_first)
    assert "cases wrong" in str(failed.value) and "OLDEST" not in str(failed.value)


# --------------------------------------------------------------------------- answer keys: matching within a tolerance
def test_answer_keys_match_within_the_tolerance_and_round_trip(tmp_path):
    from specdec_course.models import tiny_llama

    def reference(x, model=None, scale=1.0, *, flag=False):
        return {(1, 2): torch.tensor([0.5]) * scale, "n": len(x)}, (None, 3)

    keys = answer_keys.AnswerKeys()
    logits = torch.randn(300, generator=torch.Generator().manual_seed(1))  # a "large" tensor: sums and a sample
    model = tiny_llama(0, vocab_size=48)
    keys.add("f", reference, (logits, model), {}, reference(logits, model))
    keys.add("f", reference, (logits[:5], None, 2.0), {"flag": True}, reference(logits[:5], None, 2.0))
    keys.save(tmp_path / "keys.pt")
    loaded = answer_keys.Replay(answer_keys.AnswerKeys.load(tmp_path / "keys.pt"))
    nearby = tiny_llama(0, vocab_size=48)  # the same model computed a few last bits apart, as on another CPU
    with torch.no_grad():
        for weight in nearby.parameters():
            weight.mul_(1 + 3e-7)
    answer = loaded.f(logits * (1 + 3e-7), nearby)
    assert answer[0][(1, 2)].item() == 0.5 and answer[1] == (None, 3)
    assert loaded.f(logits[:5].clone(), scale=2.0, flag=True, model=None)[0]["n"] == 5  # keywords bound as positions
    for args, kwargs in (((logits * 1.001, model), {}), ((logits, tiny_llama(1, vocab_size=48)), {}),
                         ((logits[:5], None, 2.0), {}), ((logits[:5].round(), None, 2.0), {"flag": True})):
        with pytest.raises(answer_keys.MissingAnswerKey):
            loaded.f(*args, **kwargs)
    with pytest.raises(TypeError, match="references.f"):
        loaded.f()


# --------------------------------------------------------------------------- writing into a folder
def test_a_folder_that_is_not_a_release_is_refused_and_left_as_it_is(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and is not a release"):
        release.build(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="inside the course's own files"):
        release.build(ROOT / "notebooks" / "release")


def test_a_release_is_replaced_keeping_the_users_own_files(made, tmp_path):
    dest = tmp_path / "course"
    shutil.copytree(made[0], dest)
    (dest / "my_notes.txt").write_text("mine")
    (dest / "exercises" / "scratch.ipynb").write_text("{}")
    (dest / "benchmarks" / "bench_h200.json").unlink()
    again = release.build(dest, log=lambda line: None)
    assert again == made[1]  # the same files, byte for byte
    assert (dest / "my_notes.txt").read_text() == "mine" and (dest / "exercises" / "scratch.ipynb").is_file()
    assert (dest / "benchmarks" / "bench_h200.json").is_file()
    notebook = dest / "exercises" / "00_autoregressive_generation.ipynb"
    notebook.write_text(notebook.read_text().replace("YOUR CODE HERE", "my work"))
    with pytest.raises(ValueError, match="were changed since it was made .*00_autoregressive_generation.ipynb"):
        release.build(dest, log=lambda line: None)
    assert "my work" in notebook.read_text()


def test_a_release_cannot_make_a_release(made):
    with pytest.raises(ValueError, match="not the full course"):
        release.build(made[0] / "build" / "again", root=made[0])


def test_the_instructors_commands_refuse_in_the_release_and_say_what_to_use(made):
    dest = made[0]
    for command in (["grade", "somewhere"], ["nbgrader", "course"]):
        run = subprocess.run([sys.executable, "-m", "specdec_course", *command], cwd=dest, env=_env(dest),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 2, run.stderr[-2000:]
        assert f"`{command[0]}` is for instructors" in run.stderr and "specdec_course check" in run.stderr
    ready = subprocess.run([sys.executable, "-c", "from specdec_course.course.doctor import ready_line; print(ready_line())"],
                           cwd=dest, env=_env(dest), capture_output=True, text=True, timeout=300).stdout
    assert "make check" in ready and "make test" not in ready
