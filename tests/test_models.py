import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import specdec_course as sc
from specdec_course import models


def test_get_device_prefers_cpu_here_and_honours_the_override(monkeypatch):
    monkeypatch.delenv("SPECDEC_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert sc.get_device().type == expected
    monkeypatch.setenv("SPECDEC_DEVICE", "cpu")
    assert sc.get_device() == torch.device("cpu")
    assert sc.get_device("cpu", verbose=True) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "tpu", "cuda:x"])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="unknown device"):
        sc.get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        sc.get_device("cuda")


def _fake_cache(folder):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "config.json").write_text("{}")
    models.write_manifest(folder, source="test")


def test_cache_check_detects_half_written_and_corrupt_folders(tmp_path):
    good = tmp_path / "good"
    _fake_cache(good)
    assert models.cache_problem(good) is None

    truncated = tmp_path / "truncated"
    _fake_cache(truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:1000])
    assert "bytes" in models.cache_problem(truncated)

    flipped = tmp_path / "flipped"
    _fake_cache(flipped)
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[17] ^= 0xFF
    (flipped / "model.safetensors").write_bytes(bytes(data))
    assert "checksum" in models.cache_problem(flipped)

    unfinished = tmp_path / "unfinished"
    _fake_cache(unfinished)
    (unfinished / models.MANIFEST).unlink()
    assert "manifest" in models.cache_problem(unfinished)

    missing = tmp_path / "missing"
    _fake_cache(missing)
    (missing / "config.json").unlink()
    assert "missing" in models.cache_problem(missing)


def test_a_corrupt_cache_is_rebuilt_not_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    conversions = []

    def fake_convert(gguf_path, destination):
        conversions.append(destination)
        tmp = destination.with_name(destination.name + ".tmp")
        _fake_cache(tmp)
        shutil.rmtree(destination, ignore_errors=True)
        os.replace(tmp, destination)

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    folder = models.default_target_dir()
    assert len(conversions) == 1 and models.cache_problem(folder) is None
    models.default_target_dir()
    assert len(conversions) == 1, "an intact cache must be reused"
    (folder / "model.safetensors").write_bytes(b"garbage")
    models.default_target_dir()
    assert len(conversions) == 2, "a corrupt cache must be rebuilt"
    assert "unusable" in capsys.readouterr().out


def test_two_processes_starting_together_convert_once(tmp_path, monkeypatch):
    # two notebooks (or two test workers) opened at once on a fresh machine: one converts, the other waits and reuses
    import threading
    import time

    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    conversions, inside = [], []

    def slow_convert(gguf_path, destination):
        inside.append(1)
        assert len(inside) == 1, "two conversions ran at the same time"
        conversions.append(destination)
        time.sleep(0.5)
        tmp = destination.with_name(destination.name + f".tmp-{len(conversions)}")
        _fake_cache(tmp)
        os.replace(tmp, destination)
        inside.pop()

    monkeypatch.setattr(models, "_convert_gguf", slow_convert)
    folders, errors = [], []

    def load():
        try:
            folders.append(models.default_target_dir())
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(conversions) == 1 and folders[0] == folders[1]
    assert models.cache_problem(folders[0]) is None


def test_unknown_model_offline_says_how_to_use_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"offline.*load_target\(\) with no name"):
        sc.load_target("no-such-org/no-such-model-xyz")


@pytest.mark.parametrize("bad", ["", 42])
def test_bad_model_names(bad):
    with pytest.raises((TypeError, ValueError)):
        sc.load_target(bad)


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        sc.load_target(dtype="int8")


class _Tok:
    chat_template = None

    def __call__(self, text, **kw):
        return {"input_ids": [ord(c) % 50 for c in text]}


def test_chat_prompt_rejects_empty_and_non_text():
    with pytest.raises(ValueError, match="empty"):
        sc.chat_prompt(_Tok(), "   ")
    with pytest.raises(TypeError, match="string"):
        sc.chat_prompt(_Tok(), 3)
    assert sc.chat_prompt(_Tok(), "hi").shape == (1, 2)


@pytest.mark.real
def test_real_target_loads_with_its_chat_template(target):
    model, tokenizer = target
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    ids = sc.chat_prompt(tokenizer, "Hello!")
    text = tokenizer.decode(ids[0])
    assert text.rstrip().endswith("<|im_start|>assistant") and "Hello!" in text
    assert model.tokenizer is tokenizer


@pytest.mark.real
def test_second_load_in_a_new_process_reuses_the_cache(target):
    code = ("import time, specdec_course as sc; t = time.perf_counter(); sc.load_target(); "
            "print('LOAD_SECONDS', time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "converting" not in out.stdout, "the converted model should come from the cache"
    seconds = float(out.stdout.split("LOAD_SECONDS")[1])
    print(f"load_target() from the cache in a new process: {seconds:.2f} s")
