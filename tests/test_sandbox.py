"""Grading notebooks written to attack the grader: every one graded with a reason, nothing changed, nothing leaked.

One grading run over hostile exercise-03 notebooks (light: no model in its checks), most of them the solution plus
one hostile cell, so the points show the grading itself still works: shell escapes and writes outside, a daemon
that tries to outlive its kernel, filling memory and the disk, printing megabytes, a fork bomb (bounded, but above
the sandbox's process limit), spying on other learners and running the grader from inside, and one that tampers
with the checks and implements nothing. A second run with a
short time limit holds an infinite loop. Also the wire format and the proxies, without a notebook.
"""
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from specdec_course.course import grading, sandbox
from test_grade import AFTER_T2, ALL, BEFORE_T2, EXERCISE, NO_SANDBOX, NONE, ROOT, T1, T1H, T2, T2H, _by_task, _cell, _hashes, _points, \
    _released, _solved, _write

needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"grading runs notebooks in a bubblewrap sandbox and "
                                   f"{NO_SANDBOX} (`make bubblewrap`, run by `make test`, installs it where it can)")
MEMORY_MB = 2048  # the kernels' address space in these runs: enough for torch, little to fill
MAX_PROCESSES = 96  # processes and threads per sandbox in these runs: a kernel needs a few dozen


TAMPER = """import specdec_course.course.checks as checks_module
for name in dir(checks_module):
    if name.startswith("check_"):
        setattr(checks_module, name, lambda *args, **kwargs: print("ok"))
try:
    import specdec_course.course.hidden_checks as hidden
    hidden.run = lambda *args, **kwargs: print("ok")
except Exception as err:
    print("hidden checks out of reach:", err)
import torch
torch.equal = torch.allclose = lambda *args, **kwargs: True

def textbook_accept(p_tokens, q_tokens, r):
    return 0.0
"""  # every check "passes" in the kernel, Task 1 returns 0.0, Task 2 is not written


def _with_cell(nb, source, after="c01"):
    """``nb`` with a code cell of the learner's own inserted after cell ``after``."""
    index = next(i for i, c in enumerate(nb["cells"]) if c["id"] == after) + 1
    nb["cells"].insert(index, {"cell_type": "code", "id": "hostile", "metadata": {}, "source": source, "outputs": [],
                               "execution_count": None})
    return nb


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    if NO_SANDBOX is not None:
        pytest.skip(f"grading runs notebooks in a bubblewrap sandbox and {NO_SANDBOX}")
    base = tmp_path_factory.mktemp("hostile")
    subs, outside = base / "submissions", base / "outside"
    outside.mkdir()
    tag = f"specdec{os.getpid()}x{time.time_ns() % 10**6}"
    repo_file, tmp_file = ROOT / f"{tag}.txt", Path("/tmp") / f"{tag}_open"
    other = subs / "solved" / f"{EXERCISE}.ipynb"
    sleeps = [f"7{n}.{os.getpid()}" for n in range(3)]  # `sleep` arguments no other process has

    _write(subs, "solved", _solved())
    _write(subs, "escape", _with_cell(_solved(), f"""import os, subprocess
os.system("touch {outside}/system /tmp/{tag}_system")
subprocess.run(["touch", "{outside}/subprocess", "/tmp/{tag}_subprocess"])
!touch {outside}/bang /tmp/{tag}_bang
os.system("rm -f {other}; echo x > {subs}/escape.txt")
for path in ["{outside}/open", "{tmp_file}", "{repo_file}", "{other}", "{subs}/new.ipynb"]:
    try:
        open(path, "w").write("x")
    except OSError as err:
        print(err)
"""))
    _write(subs, "tamper", _with_cell(_released(), TAMPER, after="c03"))
    _write(subs, "daemon", _with_cell(_solved(), f"""import os, subprocess
os.system("setsid nohup sleep {sleeps[0]} >/dev/null 2>&1 &")
subprocess.Popen(["sleep", "{sleeps[1]}"], start_new_session=True)
if os.fork() == 0:  # the classic double fork
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{sleeps[2]}"])
    os._exit(0)
"""))
    _write(subs, "memory", _with_cell(_solved(), """hoard = []
try:
    huge = bytearray(64 * 2**30)
except MemoryError:
    print("64 GB refused")
try:
    while True:
        hoard.append(bytearray(100 * 2**20))
except MemoryError:
    print("stopped at", len(hoard), "x 100 MB")
hoard = None
"""))
    _write(subs, "disk", _with_cell(_solved(), """import os
for path in ["/tmp/big", os.path.expanduser("~/big"), "big"]:
    try:
        with open(path, "wb") as handle:
            for _ in range(8 * 1024):
                handle.write(bytes(2**20))
    except OSError as err:
        print(path, err)
for path in ["/tmp/big", os.path.expanduser("~/big"), "big"]:
    if os.path.exists(path):
        os.remove(path)
"""))
    _write(subs, "printer", _with_cell(_solved(), "for _ in range(40):\n    print('x' * 1_000_000)\n"))
    bomb = f"bomb{os.getpid()}"  # a bounded fork bomb: more sleeping children than the sandbox allows processes
    _write(subs, "bomb", _with_cell(_solved(), f"""import os
started = 0
try:
    for _ in range({3 * MAX_PROCESSES}):
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "120", "{bomb}"])
        started += 1
except OSError as err:
    print("refused after", started, err)
""", after="c10"))
    _write(subs, "spy", _with_cell(_solved(), f"""import os
def textbook_accept(p_tokens, q_tokens, r):
    seen = []
    for label, path in [("subs", "{subs}"), ("other", "{other}"), ("hidden", "{sandbox.__file__.replace('sandbox.py', 'hidden_checks.py')}"),
                        ("ssh", os.path.expanduser("~root/.ssh"))]:
        try:
            text = str(os.listdir(path)) if os.path.isdir(path) else open(path).read()
            seen.append(label + (":read" if "def " in text or "[]" not in text and os.path.isdir(path) else ":nothing"))
        except OSError as err:
            seen.append(label + ":" + type(err).__name__)
    try:
        from specdec_course.course import grading
        grading.grade("{subs}", out="/tmp/g.csv", log=lambda *args: None)
        seen.append("grade:ran")
    except Exception as err:
        seen.append("grade:" + type(err).__name__)
    return " ".join(seen)
""", after="c03"))

    late = base / "late"
    loop = _solved()
    _cell(loop, "c06")["source"] = "while True:\n    pass\n"
    _write(late, "loop", loop)

    before = {**_hashes(subs), **_hashes(late)}
    start = time.monotonic()
    rows = grading.grade(subs, timeout=600, out=base / "grades.csv", log=lambda *args: None, memory_mb=MEMORY_MB,
                         max_processes=MAX_PROCESSES)
    seconds = time.monotonic() - start
    solved = next(r for r in rows if r["learner"] == "solved" and r["task"] == grading.NOTEBOOK)["message"]
    took = float(re.fullmatch(r"ran in a sandbox in ([0-9.]+) s", solved).group(1))
    limit = max(10, round(2 * took))  # twice what the solution needs here: the same verdicts on any machine
    rows += grading.grade(late, timeout=limit, out=base / "late.csv", log=lambda *args: None, memory_mb=MEMORY_MB)
    csv_rows = [{k: str(v) for k, v in r.items()} for r in rows]
    return {"csv": csv_rows, "before": before, "after": {**_hashes(subs), **_hashes(late)}, "outside": outside,
            "tag": tag, "repo_file": repo_file, "tmp_file": tmp_file, "sleeps": sleeps, "limit": limit, "bomb": bomb,
            "seconds": seconds}


def _message(hostile, learner):
    return _by_task(hostile, learner)["(notebook)"][2]


def test_submitted_files_stay_byte_for_byte_the_same(hostile):
    assert hostile["after"] == hostile["before"]


def test_shell_escapes_create_no_file_outside_the_sandbox(hostile):
    assert list(hostile["outside"].iterdir()) == []
    assert not list(Path("/tmp").glob(f"{hostile['tag']}*"))
    assert not hostile["repo_file"].exists()
    assert _points(hostile, "escape") == ALL  # the learner's own solution is still graded
    assert _message(hostile, "escape").startswith("ran in a sandbox in ")


def test_tampering_with_the_checks_scores_zero_on_what_it_did_not_implement(hostile):
    rows = _by_task(hostile, "tamper")
    assert _points(hostile, "tamper") == NONE, rows
    assert rows[T1][2].startswith("CheckFailed: textbook_accept:") and "expected n = " in rows[T1][2]
    assert rows[T1H][2].startswith("CheckFailed: hidden case")
    assert rows[T2][2] == "not attempted"


def test_a_daemon_does_not_outlive_its_kernel(hostile):
    assert _points(hostile, "daemon") == ALL
    for marker in hostile["sleeps"]:
        assert _processes_with(f"sleep {marker}") == [], marker


def test_a_fork_bomb_is_refused_at_the_process_limit_and_nothing_of_it_survives(hostile):
    rows = _by_task(hostile, "bomb")
    assert f"tried to start more than the sandbox's {MAX_PROCESSES} processes" in rows["(notebook)"][2], rows
    assert all(rows[task][0] == rows[task][1] != "0" for task in (T1, T1H, T2)), rows  # the checks before the bomb keep their points
    assert _processes_with(hostile["bomb"]) == []
    limit = sandbox.ProcessLimit(MAX_PROCESSES)  # as root, only a pids cgroup holds the limit: one must be made here
    limit.close()
    assert limit.how, "no process limit can be set on this machine"


def test_filling_memory_or_the_disk_or_the_output_is_contained(hostile):
    for learner in ("memory", "disk", "printer"):
        assert _points(hostile, learner) == ALL, _by_task(hostile, learner)
        assert _message(hostile, learner).startswith("ran in a sandbox in "), learner


def test_other_learners_files_the_hidden_checks_and_the_grader_are_out_of_reach(hostile):
    rows = _by_task(hostile, "spy")
    seen = rows[T1][2]
    for part in ("subs:FileNotFoundError", "other:FileNotFoundError", "hidden:nothing", "ssh:FileNotFoundError",
                 "grade:FileNotFoundError"):
        assert part in seen, seen
    assert _points(hostile, "spy") == {**ALL, T1: 0, T1H: 0}


def test_an_infinite_loop_times_out_and_keeps_the_points_before_it(hostile):
    rows = _by_task(hostile, "loop")
    assert _points(hostile, "loop") == BEFORE_T2, rows
    assert f"timed out after {hostile['limit']} s in cell c06" in rows["(notebook)"][2]
    assert rows[T2][2].startswith("not run: timed out")


def test_trusted_notebooks_run_unsandboxed_say_so_and_are_still_judged_outside(tmp_path):
    """Where there is no sandbox (macOS), --trusted: the kernel is a plain process, the verdicts are still the grader's."""
    _write(tmp_path / "subs", "solved", _solved())
    _write(tmp_path / "subs", "tamper", _with_cell(_released(), TAMPER, after="c03"))
    lines = []
    rows = grading.grade(tmp_path / "subs", timeout=600, out=tmp_path / "g.csv", log=lines.append, trusted=True)
    graded = {"csv": [{k: str(v) for k, v in r.items()} for r in rows]}
    assert _points(graded, "solved") == ALL and _points(graded, "tamper") == NONE
    for learner in ("solved", "tamper"):
        assert _message(graded, learner).startswith("TRUSTED, not sandboxed (--trusted): ran unsandboxed in ")
    assert "TRUSTED" in lines[0] and "(TRUSTED: not sandboxed)" in "\n".join(lines)


# --------------------------------------------------------------------------- no notebooks below
@pytest.mark.parametrize("value", [
    None, True, 3, -2.5, float("inf"), "ü ∑ \"quoted\" \\ back", [1, [2, (3, 4)]], (), {1: "a", (2, 3): [None]},
    Path("/tmp/x"), torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.tensor(True), torch.zeros(0, 4),
    torch.tensor([1.5, -2.0], dtype=torch.bfloat16), torch.device("cpu"), torch.int64,
])
def test_values_cross_the_sandbox_exactly(value):
    back = sandbox.decode(json.loads(json.dumps(sandbox.encode(value))))
    if isinstance(value, torch.Tensor):
        assert back.dtype == value.dtype and torch.equal(back, value)
    elif isinstance(value, float) and value != value:
        assert back != back
    else:
        assert back == value and type(back) is type(value)


def test_dataclasses_of_the_course_cross_and_nothing_else_is_built():
    from specdec_course.draft import Draft

    draft = sandbox.decode(json.loads(json.dumps(sandbox.encode(Draft([3, 4], torch.ones(2, 5))))))
    assert isinstance(draft, Draft) and draft.tokens == [3, 4] and draft.q.shape == (2, 5)
    with pytest.raises(TypeError, match="not a course dataclass"):
        sandbox.decode({"__dataclass__": "subprocess:Popen", "fields": {}})
    with pytest.raises(TypeError, match="cannot send a"):
        sandbox.encode(object())


def test_a_learners_error_comes_back_as_an_error_of_the_same_name_never_as_a_verdict():
    from specdec_course.course import checks

    assert type(sandbox._exception("NotImplementedError", "stub")) is NotImplementedError
    own = sandbox._exception("CheckFailed", "fake verdict")
    assert not isinstance(own, checks.CheckFailed) and type(own).__name__ == "CheckFailed"
    answer = json.loads(sandbox.serve({}, json.dumps({"op": "call", "where": {"name": "missing"}, "attr": None,
                                                      "args": [], "kwargs": {}})))
    assert answer["error"][0] == "NameError" and "missing" in answer["error"][1]


def test_the_sandbox_shows_python_and_the_course_and_hides_the_rest(tmp_path):
    command = sandbox.bwrap_command([str(tmp_path / "shared")], [str(tmp_path), str(ROOT / "tests")], 64)
    text = " ".join(command)
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop ALL", "--ro-bind / /"):
        assert flag in text
    assert f"--ro-bind /dev/null {sandbox.__file__.replace('sandbox.py', 'hidden_checks.py')}" in text
    assert f"--tmpfs {ROOT / 'solutions'}" in text and f"--tmpfs {ROOT / 'tests'}" in text
    assert f"--size {64 * 2**20} --tmpfs /tmp" in text
    # the fresh /tmp first (a course checked out under /tmp is shown again on top of it), then the course, then what
    # is hidden inside it; a hidden folder under the host's /tmp is simply absent
    assert text.index("--tmpfs /tmp ") < text.index(f"--ro-bind {ROOT} {ROOT}") < text.index(f"--tmpfs {ROOT / 'tests'}")
    if str(tmp_path).startswith("/tmp/"):
        assert f"--tmpfs {tmp_path}" not in text


MEASURE = """import torch
from transformers import DynamicCache
from specdec_course.perf import clock

def pass_ms(model, k):
    with torch.no_grad():
        cache = DynamicCache()
        model(torch.tensor([[3, 4, 5]]), past_key_values=cache, use_cache=True)
        start = clock.now()
        model(torch.tensor([[6] * k]), past_key_values=cache, use_cache=True)
        return 1000 * (clock.now() - start)
"""


@needs_sandbox
def test_a_simulated_clock_and_a_models_set_costs_reach_the_learners_kernel(tmp_path):
    """A check that sets a model's pass costs on a simulated clock judges a learner's timing exactly, in the sandbox."""
    from specdec_course.models import tiny_llama
    from specdec_course.perf import clock

    model = tiny_llama(3, vocab_size=40)
    kernel = grading.Run(tmp_path).kernel(tmp_path / "nb", time.monotonic() + 300, EXERCISE)
    try:
        kernel.start()
        assert kernel.execute(MEASURE)["status"] == "ok"
        with clock.simulated(), clock.added_cost(model, ms_per_pass=7.0, ms_per_extra_token=2.0):
            assert [kernel.name("pass_ms")(model, k) for k in (1, 4)] == pytest.approx([7.0, 13.0], abs=1e-9)
            # the grader's clock moved as the kernel's did: a prefill of 3 tokens (11 ms) and the pass, twice
            assert clock.now() == pytest.approx((11 + 7 + 11 + 13) / 1000, abs=1e-12)
        assert kernel.name("pass_ms")(model, 4) < 1000  # outside the block: the wall clock, no added cost
    finally:
        kernel.stop()
