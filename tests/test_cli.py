import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from specdec_course import distill as sc_distill
from specdec_course import models as sc_models

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_exercises_check_command_passes():
    out = subprocess.run([sys.executable, "-m", "specdec_course", "exercises", "--check"], capture_output=True, text=True,
                         cwd=ROOT, env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_command_line_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "specdec_course", "demo", "--device", "tpu"], capture_output=True,
                         text=True, cwd=ROOT, env=ENV)
    assert out.returncode == 2 and "unknown device" in out.stderr


@pytest.mark.real
def test_demo_prints_text_from_the_real_model_offline(target):
    out = subprocess.run([sys.executable, "-m", "specdec_course", "demo", "--max-new-tokens", "24",
                          "--prompt", "Name a fruit that is yellow."], capture_output=True, text=True, cwd=ROOT, env=ENV,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "loaded SmolLM2-135M-Instruct" in out.stdout and "tokens/s" in out.stdout
    answer = out.stdout.split("Name a fruit that is yellow.")[1].split("tokens at")[0]
    assert len(answer.split()) >= 3, out.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_headless_lab_serves_the_course():
    port = _free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--IdentityProvider.token=testtoken", "--ServerApp.root_dir=" + str(ROOT)]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/notebooks?token=testtoken"
        deadline = time.time() + 90
        while True:
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        assert "00_autoregressive_generation.ipynb" in body
        lab = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token=testtoken", timeout=10)
        assert lab.status == 200 and "JupyterLab" in lab.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.real
def test_bench_prints_cost_curves_ratios_and_identity_checks(target, tmp_path):
    out_json = tmp_path / "bench.json"
    out_png = tmp_path / "bench.png"
    prompts = tmp_path / "prompts.json"
    prompts.write_text('["Name two rivers in Africa.", "What is 12 times 11?"]')
    # every row, block and check of a full bench, on few tokens and one timed pass per cost (the numbers are not the point)
    run = subprocess.run([sys.executable, "-m", "specdec_course", "bench", "--taus", "1", "2", "--max-new-tokens", "6",
                          "--repeats", "1", "--kinds", "static", "--kernels", "stock", "--no-progress",
                          "--prompts", str(prompts), "--json", str(out_json), "--plot", str(out_png)],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "T(k)/T(1)" in run.stdout and "k=16" in run.stdout
    assert "== target kernels: stock, draft kernels: stock ==" in run.stdout
    assert "target only (course loop)" in run.stdout and "static cache" in run.stdout
    assert "tau=adaptive" in run.stdout and "tau=heuristic" in run.stdout and "assisted, transformers defaults" in run.stdout
    assert "predicted" in run.stdout and "identical" in run.stdout and "kept" in run.stdout
    assert run.stdout.count("all outputs identical to target greedy: True") == 1
    assert out_png.stat().st_size > 10_000
    assert "x transformers generate on stock" in run.stdout
    assert "at the start of the run" in run.stdout  # target-only timed first and last, drift shown
    import json

    report = json.loads(out_json.read_text())
    assert set(report["cost_ms"]) == {"stock", "column-major-head", "onednn", "mixed"}
    assert all(len(curve) == 16 and all(v > 0 for v in curve.values()) for curve in report["cost_ms"].values())
    assert report["transformers_generate"]["tokens_per_s"] > 0
    assert [(b["target_kernels"], b["draft_kernels"]) for b in report["blocks"]] == [("stock", "stock")]
    for block in report["blocks"]:
        configs = [r["config"] for r in block["rows"]]
        assert configs == ["target only (course loop)", "speculative, static cache", "speculative, static cache",
                           "speculative, tau=adaptive, static",
                           "speculative, tau=heuristic, static", "transformers generate", "assisted, transformers defaults",
                           "assisted, constant", "assisted, constant"]
        assert all(r["identical"] for r in block["rows"])
        for row in block["rows"]:
            if row["config"] == "speculative, static cache":
                assert row["predicted"] > 0 and row["predicted_replay"] > 0 and 0 <= row["kept_fraction"] <= row["alpha"] <= 1
        assert 0 <= block["prediction"]["alpha"] <= 1 and block["prediction"]["costs"]["draft_ms"] > 0
        assert block["same_as_generate"] or block["first_mismatch_with_generate"]["top2_margin"] < 1e-3
    assert len(report["prompts"]) == 2
    assert report["command"].startswith("python -m specdec_course bench --taus 1 2")


def test_one_block_per_kernel_configuration_on_the_same_models():
    """Several kernel paths (here on tiny models): each gets its block of rows, every path its cost curve."""
    from helpers import CharTokenizer, tiny_pair

    from specdec_course.perf.benchmark import kernel_benchmark

    target, draft = tiny_pair(0)
    report = kernel_benchmark(target, draft, CharTokenizer(), kernels=("stock", "onednn"), taus=(1, 2), max_new_tokens=6,
                              prompts=["ab cd", "efg"], kinds=("none", "static"), cost_ks=range(1, 5), cost_repeats=1,
                              progress=False)
    assert [(b["target_kernels"], b["draft_kernels"]) for b in report["blocks"]] == [("stock", "stock"), ("onednn", "onednn")]
    assert set(report["cost_ms"]) == {"stock", "column-major-head", "onednn", "mixed"}
    assert all(len(curve) == 4 and all(v > 0 for v in curve.values()) for curve in report["cost_ms"].values())
    for block in report["blocks"]:
        assert block["rows"][0]["config"] == "target only (course loop)" and len(block["rows"]) == 11
        assert all(r["identical"] for r in block["rows"])


def test_bench_rejects_a_bad_prompt_file_before_loading_models(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    run = subprocess.run([sys.executable, "-m", "specdec_course", "bench", "--prompts", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert run.returncode == 2 and "JSON list of non-empty strings" in run.stderr


def test_bench_default_prompts_are_the_evaluation_split():
    from specdec_course.perf.benchmark import bench_prompts

    assert bench_prompts() == sc_distill.load_prompts("eval")[:8]  # written independently, never trained on


@pytest.mark.parametrize("argv, error", [(["--policies", "greedy-ish"], "use any of adaptive, heuristic"),
                                         (["--repeats", "0"], "--repeats must be at least 1"),
                                         (["--trees", "--budgets", "4", "0"], "node counts per tree"),
                                         (["--trees", "--levels", "0"], "draft passes per tree"),
                                         (["--trees", "--tree-drafter", "lookup", "--levels", "2"], "its matches"),
                                         (["--trees", "--drafters"], "two different tables")])
def test_bench_rejects_bad_options_before_loading_models(argv, error, capsys, monkeypatch):
    from specdec_course import __main__ as cli

    # in this process (a second each, not a fresh interpreter): an error must come before any model is loaded
    monkeypatch.setattr(sc_models, "load_pair", lambda *a, **k: pytest.fail("a model was loaded before the error"))
    assert cli.main(["bench", *argv]) == 2
    assert error in capsys.readouterr().err


def test_lab_targets_serve_the_whole_course_folder():
    # JupyterLab given a notebook file serves that file's folder unless told otherwise; the course needs exercises/ too
    for target in ("lab", "lab-headless"):
        out = subprocess.run(["make", "-n", target], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60)
        assert out.returncode == 0, out.stderr
        line = next(l for l in out.stdout.splitlines() if "jupyter lab" in l)
        assert f"--ServerApp.root_dir={ROOT}" in line and "notebooks/00_autoregressive_generation.ipynb" in line


def test_bench_trees_prints_the_table_and_writes_json_and_plot(tmp_path, monkeypatch, capsys):
    import json

    from specdec_course import __main__ as cli
    import specdec_course as sc
    from helpers import CharTokenizer, noisy_copy

    target = sc.tiny_llama(3, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.6, 3)
    monkeypatch.setattr(sc_models, "load_pair", lambda *a, **k: (target, draft, CharTokenizer()))  # tiny, in seconds
    prompts = tmp_path / "prompts.json"
    prompts.write_text('["abc de", "fgh"]')
    argv = ["bench", "--trees", "--prompts", str(prompts), "--max-new-tokens", "8", "--taus", "2", "--budgets", "2", "4",
            "--levels", "2", "--repeats", "1", "--no-progress", "--json", str(tmp_path / "t.json"),
            "--plot", str(tmp_path / "t.png")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "dynamic tree, 4 nodes by levels" in out and "best tree / best chain" in out
    report = json.loads((tmp_path / "t.json").read_text())
    assert [(r["kind"], r["setting"]) for r in report["rows"]] == [
        ("target", None), ("chain", 2), ("tree", 2), ("tree", 4), ("levels", [2, 2]), ("levels", [4, 2]),
        ("static", [4, 2, 1, 1])]
    assert all(r["identical"] for r in report["rows"]) and report["command"].startswith("python -m specdec_course bench")
    assert (tmp_path / "t.png").stat().st_size > 10_000
    # prompt lookup's matches as trees: no static shape, the drafter named, every output still the target's
    argv = ["bench", "--trees", "--tree-drafter", "lookup", "--prompts", str(prompts), "--max-new-tokens", "8",
            "--taus", "2", "--budgets", "4", "--repeats", "1", "--no-progress", "--json", str(tmp_path / "l.json")]
    assert cli.main(argv) == 0
    assert "trees and chains from: prompt lookup" in capsys.readouterr().out
    report = json.loads((tmp_path / "l.json").read_text())
    assert [r["kind"] for r in report["rows"]] == ["target", "chain", "tree"] and report["tree_drafter"] == "lookup"
    assert all(r["identical"] for r in report["rows"]) and report["costs_ms"]["draft"] == 0.0
    # the feature head's trees: grown a level at a time only, its pass timed (it is a model, though not a module)
    from specdec_course import drafters
    from specdec_course.drafters import FeatureHead, FeatureHeadDrafter

    monkeypatch.setattr(drafters, "load_feature_head", lambda t: FeatureHeadDrafter(t, FeatureHead.for_target(t)))
    argv = ["bench", "--trees", "--tree-drafter", "head", "--prompts", str(prompts), "--max-new-tokens", "8",
            "--taus", "2", "--budgets", "4", "--repeats", "1", "--no-progress", "--json", str(tmp_path / "h.json")]
    assert cli.main(argv) == 0
    assert "trees and chains from: feature head" in capsys.readouterr().out
    report = json.loads((tmp_path / "h.json").read_text())
    assert [(r["kind"], r["setting"]) for r in report["rows"]] == [("target", None), ("chain", 2), ("levels", [4, 4])]
    assert all(r["identical"] for r in report["rows"]) and report["costs_ms"]["draft"] > 0
