"""Kernel paths: the same function on every path, a choice made by measurement, lossless speculation on each."""
import itertools
import json
import random

import pytest
import torch

import specdec_course as sc
from specdec_course.perf import clock, kernels
from specdec_course.distill import load_prompts

from conftest import first_mismatch_margin
from helpers import tiny_pair

PATHS = kernels.available_paths(sc.tiny_llama(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_this_cpu_offers_the_onednn_paths():
    # the course's CPU builds of torch ship oneDNN; if this fails the fast paths were silently lost
    assert PATHS == ["stock", "column-major-head", "onednn", "mixed"]


@pytest.mark.parametrize("path", PATHS)
def test_every_path_computes_the_same_logits(path, tmp_path):
    from transformers import AutoModelForCausalLM

    model = sc.tiny_llama(3, vocab_size=300, hidden_size=64)
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    stock = _logits(model, ids)
    keys = sorted(model.state_dict())
    sc.use_kernels(model, path, min_rows=2 if path == "mixed" else None)
    assert sc.kernel_path(model) == path
    for k in (1, 2, 5, 12):  # 1 row and several (mixed switches at 2)
        ours = _logits(model, ids[:, :k])
        assert torch.allclose(ours, stock[:, :k], rtol=1e-4, atol=1e-5), (path, k, (ours - stock[:, :k]).abs().max())
        assert torch.equal(ours.argmax(-1), stock[:, :k].argmax(-1))
    assert sorted(model.state_dict()) == keys  # nothing renamed: save_pretrained writes the same checkpoint
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(_logits(reloaded, ids), stock)  # the saved weights are the original numbers
    sc.use_kernels(model, "stock")
    assert torch.equal(_logits(model, ids), stock)  # and back to exactly the stock model
    assert not any(isinstance(m, kernels.OneDNNLinear) for m in model.modules())


def test_onednn_keeps_tied_weights_shared_and_one_packed_copy_per_linear():
    model = sc.tiny_llama(0)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    sc.use_kernels(model, "onednn")
    packed = [m for m in model.modules() if isinstance(m, kernels.OneDNNLinear)]
    assert len(packed) == linears
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_mixed_path_takes_the_stock_product_below_min_rows():
    model = sc.tiny_llama(5, vocab_size=300, hidden_size=64)
    ids = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(2))
    stock = {k: _logits(model, ids[:, :k]) for k in (1, 2, 4)}
    sc.use_kernels(model, "onednn")
    onednn = {k: _logits(model, ids[:, :k]) for k in (1, 2, 4)}
    sc.use_kernels(model, "mixed", min_rows=4)
    assert model.onednn_min_rows == 4
    for k in (1, 2):
        assert torch.equal(_logits(model, ids[:, :k]), stock[k])
    assert torch.equal(_logits(model, ids[:, :4]), onednn[4])


def test_training_still_works_on_the_onednn_path():
    model = sc.tiny_llama(1).train()
    sc.use_kernels(model, "onednn")
    loss = model(torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[3, 4, 5, 6]])).loss
    loss.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("path", PATHS)
def test_speculative_greedy_equals_target_only_on_the_same_objects(path):
    for seed in range(3):
        target, draft = tiny_pair(seed, vocab=96)
        for model in (target, draft):
            sc.use_kernels(model, path)
        prompt = torch.randint(2, 96, (1, 6), generator=torch.Generator().manual_seed(seed))
        reference = sc.autoregressive_generate(target, prompt, 24).tokens
        for tau, kind in itertools.product((1, 2, 3, 5), ("dynamic", "static")):
            got = sc.speculative_generate(target, draft, prompt, 24, tau=tau, cache_kind=kind).tokens
            position, margin = first_mismatch_margin(target, prompt, reference, got)
            assert got == reference, f"{path}, seed {seed}, tau {tau}, {kind}: first differs at {position}, margin {margin}"


@pytest.mark.skipif(not kernels.bf16_supported("cpu"), reason="this CPU has no native bfloat16")
def test_bfloat16_speculation_is_lossless_against_the_bfloat16_target():
    target, draft = tiny_pair(0, vocab=96)
    target, draft = target.to(torch.bfloat16), draft.to(torch.bfloat16)
    prompt = torch.randint(2, 96, (1, 6), generator=torch.Generator().manual_seed(0))
    for path in kernels.available_paths(target):
        sc.use_kernels(target, path)
        sc.use_kernels(draft, path)
        reference = sc.autoregressive_generate(target, prompt, 20).tokens
        for tau in (2, 4):
            assert sc.speculative_generate(target, draft, prompt, 20, tau=tau).tokens == reference, (path, tau)


def test_fastest_path_never_picks_one_that_measured_slower():
    rng = random.Random(0)
    for _ in range(500):
        times = {p: {k: rng.uniform(1, 2) for k in (1, 2, 4)} for p in kernels.KERNEL_PATHS}
        best = kernels.fastest_path(times)
        assert all(sum(times[best].values()) <= sum(t.values()) for t in times.values())
    tie = {"stock": {1: 1.0}, "onednn": {1: 1.0}}
    assert kernels.fastest_path(tie) == "stock"  # a tie keeps the stock path


def test_switch_over_is_where_onednn_stays_faster():
    stock = {1: 1.0, 2: 1.0, 3: 1.1, 4: 1.5, 8: 1.9}
    assert kernels.switch_over({"stock": stock, "onednn": {1: 1.2, 2: 1.2, 3: 1.2, 4: 1.3, 8: 1.4}}) == 4
    assert kernels.switch_over({"stock": stock, "onednn": {1: 1.2, 2: 1.2, 3: 1.0, 4: 1.6, 8: 1.4}}) == 8
    assert kernels.switch_over({"stock": stock, "onednn": {k: 0.5 for k in stock}}) is None  # always: plain onednn
    assert kernels.switch_over({"stock": stock, "onednn": {k: 9.0 for k in stock}}) is None  # never


def test_choose_kernels_measures_once_then_remembers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    model = sc.tiny_llama(2, vocab_size=256, hidden_size=64)
    chosen = sc.choose_kernels(model, "auto", ks=(1, 3))
    assert sc.kernel_path(model) == chosen
    record = next(iter(json.loads((tmp_path / kernels.CHOICES_FILE).read_text()).values()))
    totals = {p: sum(v.values()) for p, v in record["ms"].items()}
    assert record["path"] == chosen and totals[chosen] <= totals["stock"]  # never slower than stock, as measured

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although a choice was remembered")

    monkeypatch.setattr(kernels, "pass_times", no_measuring)
    fresh = sc.tiny_llama(2, vocab_size=256, hidden_size=64)
    assert sc.choose_kernels(fresh, "auto", ks=(1, 3)) == chosen
    with pytest.raises(AssertionError, match="measured again"):
        sc.choose_kernels(fresh, "measure", ks=(1, 3))
    assert sc.choose_kernels(fresh, "stock") == "stock" and sc.kernel_path(fresh) == "stock"


@pytest.mark.parametrize("onednn, expected", [
    (lambda k: 12 + 0.5 * (k - 1), ("mixed", 4)),    # dearer for 1 row, cheaper from 4 rows on: switch there
    (lambda k: 9 + 0.5 * (k - 1), ("onednn", None)),  # cheaper at every k
    (lambda k: 30 + 3 * (k - 1), ("stock", None)),    # dearer at every k
])
def test_choose_kernels_takes_the_path_that_costs_least(tmp_path, monkeypatch, onednn, expected):
    # the costs of each path are set on the simulated clock: the choice is the same on every machine
    monkeypatch.setenv("SPECDEC_CACHE_DIR", str(tmp_path))
    cost = {"stock": lambda k: 10 + 2 * (k - 1), "column-major-head": lambda k: 10.5 + 2 * (k - 1), "onednn": onednn}

    def charge(module, args, kwargs):
        k, path = args[0].shape[-1] if args else kwargs["input_ids"].shape[-1], sc.kernel_path(module)
        if path == "mixed":
            path = "onednn" if k >= module.onednn_min_rows else "stock"
        clock.spend(cost[path](k))

    model = sc.tiny_llama(2, vocab_size=256, hidden_size=64)
    model.register_forward_pre_hook(charge, with_kwargs=True)
    with clock.simulated():
        chosen = sc.choose_kernels(model, "measure", ks=(1, 2, 4, 8))
    assert (chosen, getattr(model, "onednn_min_rows", None)) == expected
    record = next(iter(json.loads((tmp_path / kernels.CHOICES_FILE).read_text()).values()))
    assert record["ms"]["stock"] == {"1": 10.0, "2": 12.0, "4": 16.0, "8": 24.0}


def test_bad_kernel_requests_say_what_is_allowed():
    model = sc.tiny_llama(0)
    with pytest.raises(ValueError, match="unknown kernel path 'fast'.*'stock'"):
        sc.use_kernels(model, "fast")
    with pytest.raises(ValueError, match="min_rows applies to the 'mixed' path only"):
        sc.use_kernels(model, "onednn", min_rows=4)
    with pytest.raises(ValueError, match="at least 2"):
        sc.use_kernels(model, "mixed", min_rows=1)
    with pytest.raises(ValueError, match="unknown kernels 'fastest'.*'auto'"):
        sc.choose_kernels(model, "fastest")
    with pytest.raises(ValueError, match="unknown kernels"):
        sc.load_draft(kernels="gpu", verbose=False)


def test_bfloat16_on_a_cpu_without_it_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(kernels, "bf16_supported", lambda device: False)
    with pytest.raises(ValueError, match="no native bfloat16.*float32"):
        sc.load_draft(dtype="bfloat16", verbose=False)


@pytest.mark.real
def test_real_target_on_the_fast_paths_equals_transformers_generate(target):
    model, tokenizer = target
    start = sc.kernel_path(model), getattr(model, "onednn_min_rows", None)
    prompts = load_prompts("heldout")[:3]
    # the path the target was loaded on ("auto") is compared with generate on 10 prompts in test_generation.py
    try:
        for path in [p for p in ("onednn", "mixed") if p != start[0]]:
            sc.use_kernels(model, path)
            for text in prompts:
                ids = sc.chat_prompt(tokenizer, text)
                ours = sc.autoregressive_generate(model, ids, 48, eos_token_id=tokenizer.eos_token_id).tokens
                with torch.no_grad():
                    theirs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False,
                                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
                theirs = theirs[0, ids.shape[1]:].tolist()
                position, margin = first_mismatch_margin(model, ids, theirs, ours)
                assert ours == theirs, f"{path}, {text!r}: first differs at {position}, target top-2 margin {margin}"
    finally:
        sc.use_kernels(model, start[0], min_rows=start[1])
