"""The draft model: distillation code on tiny models, loading, pairing, and the real shipped draft."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import specdec_course as sc
from specdec_course import distill
from specdec_course.perf.analysis import greedy_agreement, summarize, PromptAcceptance

ROOT = Path(__file__).resolve().parent.parent


def _tiny_data(target, n_prompts=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, target.config.vocab_size, (4,), generator=gen) for _ in range(n_prompts)]
    return distill.make_data(target, prompts, eos_token_id=1, max_new_tokens=12, batch_size=5, progress=False)


def test_make_data_labels_are_the_targets_argmax():
    target = sc.tiny_llama(3, peaked=3.0)
    data = _tiny_data(target)
    assert len(data["tokens"]) == 12
    for tokens, labels, plen in zip(data["tokens"], data["labels"], data["prompt_lengths"]):
        assert tokens.shape == labels.shape and plen == 4
        with torch.no_grad():
            expected = target(tokens.long().unsqueeze(0)).logits[0].argmax(-1)
        assert torch.equal(labels.long(), expected)
        # the answer is the target's own greedy continuation: each answer token is the label before it
        answer = tokens[plen:].long()
        assert torch.equal(answer, labels[plen - 1:-1].long()) or 1 in answer.tolist()


def test_sampled_data_differs_from_greedy_but_keeps_argmax_labels():
    target = sc.tiny_llama(4, vocab_size=40)
    prompts = [torch.tensor([3, 4, 5, 6])] * 4
    greedy = distill.make_data(target, prompts, eos_token_id=1, max_new_tokens=10, progress=False)
    sampled = distill.make_data(target, prompts, eos_token_id=1, max_new_tokens=10, temperature=1.5, seed=1, progress=False)
    assert len({tuple(t.tolist()) for t in greedy["tokens"]}) == 1
    assert len({tuple(t.tolist()) for t in sampled["tokens"]}) > 1
    with torch.no_grad():
        for tokens, labels in zip(sampled["tokens"], sampled["labels"]):
            assert torch.equal(labels.long(), target(tokens.long().unsqueeze(0)).logits[0].argmax(-1))


def test_training_raises_agreement_with_the_target(tmp_path):
    target = sc.tiny_llama(5, vocab_size=64, hidden_size=64, peaked=3.0)
    data = _tiny_data(target, n_prompts=24)
    config = distill.draft_config(target.config, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    init = distill.projected_embedding(target, 32)
    assert init.shape == (64, 32)
    untrained, _ = distill.train_draft(data, config, steps=1, lr=1e-9, progress=False, init_embedding=init)
    trained, history = distill.train_draft(data, config, steps=150, batch_size=8, lr=1e-2, progress=False,
                                           init_embedding=init, log_every=50)
    before, after = distill.label_accuracy(untrained, data), distill.label_accuracy(trained, data)
    assert after > before + 0.3 and history[-1][1] < history[0][1], (before, after, history)
    distill.save_draft(trained, tmp_path / "draft")
    assert list((tmp_path / "draft").glob("*.safetensors"))
    loaded = sc.load_draft(tmp_path / "draft", kernels="column-major-head", verbose=False)
    assert loaded.dtype == torch.float32 and loaded.config.vocab_size == 64
    assert loaded.get_output_embeddings().weight.t().is_contiguous()  # the kernel path asked for
    assert distill.label_accuracy(loaded, data) == pytest.approx(after, abs=0.05)  # float16 storage


def test_column_major_output_layer_keeps_the_logits_and_saves(tmp_path):
    from transformers import AutoModelForCausalLM

    target = sc.tiny_llama(4, vocab_size=300)
    data = _tiny_data(target, n_prompts=4)
    config = distill.draft_config(target.config, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    draft, _ = distill.train_draft(data, config, steps=3, batch_size=4, progress=False)
    draft.eval()
    ids = torch.randint(2, 300, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = draft(ids).logits
        sc.column_major_output_layer(draft)
        after = draft(ids).logits
    head = draft.get_output_embeddings().weight
    assert head.t().is_contiguous() and not head.is_contiguous()
    assert draft.get_input_embeddings().weight.is_contiguous()
    assert torch.equal(head, draft.get_input_embeddings().weight)
    assert torch.allclose(before, after, atol=1e-6)
    draft.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded.get_output_embeddings().weight, head)


def test_training_is_reproducible_with_a_seed():
    target = sc.tiny_llama(6)
    data = _tiny_data(target, n_prompts=6)
    config = distill.draft_config(target.config, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    a, _ = distill.train_draft(data, config, steps=5, batch_size=4, seed=3, progress=False)
    b, _ = distill.train_draft(data, config, steps=5, batch_size=4, seed=3, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_draft_config_shares_the_targets_vocabulary_and_specials():
    target = sc.tiny_llama(0, vocab_size=100)
    config = distill.draft_config(target.config, hidden_size=24, num_layers=1, num_heads=3, num_kv_heads=1)
    assert config.vocab_size == 100 and config.eos_token_id == target.config.eos_token_id and config.tie_word_embeddings
    with pytest.raises(ValueError, match="multiple"):
        distill.draft_config(target.config, hidden_size=25, num_heads=3)


def test_prompt_set_has_disjoint_splits():
    train, heldout = distill.load_prompts("train"), distill.load_prompts("heldout")
    assert len(heldout) >= 30 and len(train) >= 500 and not set(train) & set(heldout)
    with pytest.raises(ValueError, match="split"):
        distill.load_prompts("test")


def test_distill_command_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        distill.main(["train", "--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_mismatched_pair_is_a_clear_error():
    target, draft = sc.tiny_llama(0, vocab_size=64), sc.tiny_llama(1, vocab_size=80)
    with pytest.raises(ValueError, match="do not share a vocabulary: the target has 64 token ids, the draft 80"):
        sc.check_pair(target, draft)
    sc.check_pair(target, sc.tiny_llama(2, vocab_size=64))


def test_greedy_agreement_counts_matching_argmaxes():
    model = sc.tiny_llama(0, peaked=2.0)
    prompt = torch.tensor([[3, 4, 5]])
    own = sc.autoregressive_generate(model, prompt, 10).tokens
    assert greedy_agreement(model, prompt, own) == 10  # a model always agrees with its own greedy output
    assert greedy_agreement(model, prompt, [(t + 1) % 64 for t in own]) < 10
    report = summarize([PromptAcceptance("p", 10, 7, 50.0, 5.0), PromptAcceptance("q", 30, 15, 70.0, 6.0)])
    assert report["alpha"] == pytest.approx(22 / 40) and report["c"] == pytest.approx(5.5 / 60.0)


# ---------------------------------------------------------------- the real, shipped draft
def test_shipped_draft_is_small_and_documented():
    folder = ROOT / "specdec_course" / "draft"
    weights = list(folder.glob("*.safetensors"))
    assert weights and sum(p.stat().st_size for p in weights) <= 30 * 2**20
    card = (folder / "README.md").read_text()
    assert "alpha" in card.lower() or "α" in card
    assert json.loads((folder / "training.json").read_text())["parameters"] > 0


@pytest.mark.real
def test_load_pair_offline_in_a_fresh_process():
    code = ("import specdec_course as sc; t, d, tok = sc.load_pair(); "
            "print('VOCAB', t.config.vocab_size, d.config.vocab_size, d.config.num_hidden_layers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    target_vocab, draft_vocab, layers = out.stdout.split("VOCAB")[1].split()[:3]
    assert target_vocab == draft_vocab == "49152" and int(layers) < 30


@pytest.mark.real
def test_transformers_assisted_generation_runs_with_our_draft(target):
    model, tokenizer = target
    draft = sc.load_draft(verbose=False)
    ids = sc.chat_prompt(tokenizer, "Give me three tips for staying focused.")
    plain = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assisted = model.generate(ids, max_new_tokens=40, do_sample=False, assistant_model=draft,
                              pad_token_id=tokenizer.eos_token_id)
    n = min(plain.shape[1], assisted.shape[1])
    assert assisted.shape[1] > ids.shape[1]
    assert torch.equal(plain[0, :n], assisted[0, :n]), "assisted greedy decoding should reproduce plain greedy decoding"


@pytest.mark.real
def test_acceptance_command_on_a_prompt_file(tmp_path, target):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["Name three colours.", "What is a verb?"]))
    out_json = tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "specdec_course", "acceptance", "--prompts", str(prompts),
                          "--max-new-tokens", "16", "--json", str(out_json)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "greedy acceptance rate alpha" in run.stdout and "c = " in run.stdout
    report = json.loads(out_json.read_text())
    assert report["prompts"] == 2 and 0 <= report["alpha"] <= 1 and report["c"] > 0
    assert sum(r["positions"] for r in report["rows"]) == report["positions"] <= 32


def test_acceptance_command_rejects_a_bad_prompt_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    run = subprocess.run([sys.executable, "-m", "specdec_course", "acceptance", "--prompts", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2 and "JSON list of non-empty strings" in run.stderr


@pytest.mark.real
def test_plain_export_of_the_shipped_draft_runs_assisted_generation(target, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = target
    assert distill.main(["export", "--out", str(tmp_path / "plain")]) == 0
    plain_draft = AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain"), dtype=torch.float32).eval()
    ids = sc.chat_prompt(tokenizer, "How do bees make honey?")
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        assisted = model.generate(ids, max_new_tokens=32, do_sample=False, assistant_model=plain_draft,
                                  pad_token_id=tokenizer.eos_token_id)
    n = min(plain.shape[1], assisted.shape[1])
    assert assisted.shape[1] > ids.shape[1] and torch.equal(plain[0, :n], assisted[0, :n])
    shipped = sc.load_draft(target=model, kernels="stock", verbose=False)
    with torch.no_grad():  # the export scores the shipped draft's tokens as the draft does, up to float16 storage
        subset = shipped.lm_head.token_ids
        exported, own = plain_draft(ids).logits[..., subset], shipped(ids).logits[..., subset]
    torch.testing.assert_close(exported, own, rtol=0, atol=0.05)
    assert (exported.argmax(-1) == own.argmax(-1)).float().mean() >= 0.95


def test_training_refuses_a_model_on_prepacked_kernels_and_trains_it_back_on_stock():
    """Pre-packed oneDNN products read copies of the weights that training never updates: a draft switched to them
    before training would learn nothing, silently. train_draft says so, and the stock path trains as usual."""
    from specdec_course.perf.kernels import onednn_available

    if not onednn_available(torch.float32):
        pytest.skip("this torch build or CPU has no oneDNN float32 kernels")
    target = sc.tiny_llama(6)
    data = _tiny_data(target, n_prompts=6)
    config = distill.draft_config(target.config, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    draft, _ = distill.train_draft(data, config, steps=1, progress=False)
    for path in ("onednn", "mixed"):
        sc.use_kernels(draft, path)
        with pytest.raises(ValueError, match="pre-packed .*train it on 'stock'"):
            distill.train_draft(data, model=draft, steps=1, progress=False)
    sc.use_kernels(draft, "stock")
    before = [p.detach().clone() for p in draft.parameters()]
    draft, _ = distill.train_draft(data, model=draft, steps=2, batch_size=4, lr=1e-2, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, draft.parameters()))
