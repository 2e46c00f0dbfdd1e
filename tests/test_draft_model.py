"""A draft cut from the target with a reduced output vocabulary, and the self-instruct requests: tiny models, seconds."""
import copy
import json

import pytest
import torch

import specdec_course as sc
from specdec_course import distill
from specdec_course.draft_model import (SubsetHead, export_plain, frequent_tokens, is_sliced_draft_folder,
                                        load_sliced_draft, save_sliced_draft, target_sliced_draft)
from specdec_course.self_instruct import clean_request, pre_query_text, write_requests

VOCAB = 96
SUBSET = torch.tensor([5, 1, 2, 40, 7, 63, 11, 12, 13, 90, 3, 88, 20, 21, 22, 30, 31, 50, 51, 52])


def _truncated(target, n):
    """The target with only its first n layers: what a sliced draft computes before any training."""
    short = copy.deepcopy(target)
    short.model.layers = short.model.layers[:n]
    short.config.num_hidden_layers = n
    return short


def _ids(n=12, seed=0):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def test_sliced_draft_is_the_targets_first_layers_over_the_subset():
    target = sc.tiny_llama(1, vocab_size=VOCAB, num_layers=3, peaked=2.0)
    draft = target_sliced_draft(target, 2, SUBSET)
    ids = _ids()
    with torch.no_grad():
        logits = draft(ids).logits
        expected = _truncated(target, 2)(ids).logits
    outside = torch.ones(VOCAB, dtype=torch.bool)
    outside[SUBSET] = False
    assert torch.isneginf(logits[..., outside]).all()
    torch.testing.assert_close(logits[..., SUBSET], expected[..., SUBSET], rtol=1e-5, atol=1e-5)
    assert draft.model.embed_tokens is target.model.embed_tokens  # shared, not copied
    assert not draft.model.embed_tokens.weight.requires_grad
    full = target_sliced_draft(target, 1)
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, _truncated(target, 1)(ids).logits)


def test_sliced_draft_rejects_bad_shapes():
    target = sc.tiny_llama(1, vocab_size=VOCAB, num_layers=2)
    with pytest.raises(ValueError, match="num_layers"):
        target_sliced_draft(target, 3)
    with pytest.raises(ValueError, match="distinct"):
        target_sliced_draft(target, 1, torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="distinct"):
        target_sliced_draft(target, 1, torch.tensor([1, VOCAB]))


def test_frequent_tokens_counts_and_keeps_the_required_ids():
    seqs = [torch.tensor([4, 4, 4, 9, 9, 2]), torch.tensor([9, 7, 4])]
    assert frequent_tokens(seqs, 2).tolist() == [4, 9]
    assert frequent_tokens(seqs, 3, always=[2]).tolist() == [2, 4, 9]
    assert frequent_tokens(seqs, 10).tolist() == [4, 9, 2, 7]  # ties: smaller id first
    with pytest.raises(ValueError):
        frequent_tokens(seqs, 0)


def test_sliced_draft_saves_without_the_embedding_and_loads_back(tmp_path):
    from safetensors import safe_open

    target = sc.tiny_llama(2, vocab_size=VOCAB, num_layers=3, peaked=2.0)
    draft = target_sliced_draft(target, 2, SUBSET)
    save_sliced_draft(draft, tmp_path / "d", dtype=torch.float32)
    assert is_sliced_draft_folder(tmp_path / "d") and not is_sliced_draft_folder(tmp_path)
    with safe_open(str(tmp_path / "d" / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "embed" in k]
    loaded = load_sliced_draft(tmp_path / "d", target.model.embed_tokens)
    ids = _ids(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, draft(ids).logits)
    with pytest.raises(ValueError, match="target embedding"):
        load_sliced_draft(tmp_path / "d", torch.nn.Embedding(VOCAB + 1, target.config.hidden_size))


def test_plain_export_loads_with_transformers_and_agrees_on_the_subset(tmp_path):
    from transformers import AutoModelForCausalLM

    target = sc.tiny_llama(2, vocab_size=VOCAB, num_layers=2, peaked=2.0)
    draft = target_sliced_draft(target, 1, SUBSET)
    export_plain(draft, tmp_path / "plain", dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain")).eval()
    ids = _ids(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits[..., SUBSET], draft(ids).logits[..., SUBSET], rtol=1e-5, atol=1e-5)
        out = target.generate(ids, assistant_model=plain, max_new_tokens=12, do_sample=False, pad_token_id=0)
        ref = target.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)


def test_transformers_assisted_generation_runs_with_a_sliced_draft_directly():
    target = sc.tiny_llama(2, vocab_size=VOCAB, num_layers=2, peaked=2.0)
    draft = target_sliced_draft(target, 1, SUBSET)
    ids = _ids(8, seed=4)
    with torch.no_grad():
        out = target.generate(ids, assistant_model=draft, max_new_tokens=12, do_sample=False, pad_token_id=0)
        ref = target.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("path", ["stock", "column-major-head", "onednn"])
def test_speculative_greedy_with_a_sliced_draft_equals_the_target(path):
    from specdec_course.perf.kernels import available_paths

    target = sc.tiny_llama(3, vocab_size=VOCAB, num_layers=3, peaked=2.0)
    draft = target_sliced_draft(target, 1, SUBSET)
    if path not in available_paths(draft):
        pytest.skip(f"{path} not available here")
    sc.use_kernels(draft, path)
    prompt = _ids(6, seed=5)
    expected = sc.autoregressive_generate(target, prompt, 24).tokens
    for tau in (1, 2, 4):
        got = sc.speculative_generate(target, draft, prompt, max_new_tokens=24, tau=tau, rule="greedy").tokens
        assert got == expected, (tau, sc.generation.mismatch_margin(target, prompt, expected, got))
    sc.use_kernels(draft, "stock")


def test_training_a_sliced_draft_raises_agreement_and_keeps_the_embedding(tmp_path):
    target = sc.tiny_llama(5, vocab_size=VOCAB, hidden_size=48, num_layers=3, peaked=3.0)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, VOCAB, (4,), generator=gen) for _ in range(24)]
    data = distill.make_data(target, prompts, eos_token_id=1, max_new_tokens=12, batch_size=5, progress=False)
    subset = frequent_tokens(data["labels"], 40)
    draft = target_sliced_draft(target, 1, subset)
    embedding = draft.model.embed_tokens.weight.detach().clone()
    before = distill.label_accuracy(draft, data)
    trained, history = distill.train_draft(data, model=draft, steps=120, batch_size=8, lr=5e-3, progress=False,
                                           log_every=40, max_length=10)
    after = distill.label_accuracy(trained, data)
    assert after > before + 0.15, (before, after, history)
    assert torch.equal(trained.model.embed_tokens.weight, embedding)
    save_sliced_draft(trained, tmp_path / "d", dtype=torch.float32)
    loaded = sc.load_draft(tmp_path / "d", target=target, kernels="stock", verbose=False)
    assert distill.label_accuracy(loaded, data) == pytest.approx(after, abs=1e-6)
    with pytest.raises(ValueError, match="either a config"):
        distill.train_draft(data, steps=1)


def test_batched_labels_equal_one_sequence_at_a_time():
    target = sc.tiny_llama(6, vocab_size=VOCAB)
    seqs = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (3, 9, 5, 12)]
    labels = distill.target_labels(target, seqs, batch_size=3)
    with torch.no_grad():
        for s, lab in zip(seqs, labels):
            assert torch.equal(lab.long(), target(s.unsqueeze(0)).logits[0].argmax(-1))


# --------------------------------------------------------------------------- self-instruct requests
def test_clean_request_rules():
    assert clean_request("  How do magnets work?  ") == "How do magnets work?"
    assert clean_request("Hi") is None                      # too short
    assert clean_request("word " * 200) is None             # too long
    assert clean_request("Что такое магнит и как он работает?") is None  # mostly not plain text
    assert clean_request("12 + 7 = ?") is None              # too few words


class _CharTokenizer:
    """A character-level tokenizer with a chat template: enough to drive write_requests on a tiny model."""
    chat_template = "{{ 'U:' }}{{ messages[0]['content'] }}{{ '|' }}"
    eos_token_id = 1
    pad_token_id = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return "U:" + messages[0]["content"] + "|"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [2 + (ord(ch) % 60) for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join("abcdefghij klmnopqrstuvwxyz "[(i - 2) % 28] for i in ids if i > 1)


def test_pre_query_text_is_the_template_before_the_users_words():
    tok = _CharTokenizer()
    assert pre_query_text(tok) == "U:"
    real = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(str(sc.models.default_target_dir()))
    pre = pre_query_text(real)
    rendered = real.apply_chat_template([{"role": "user", "content": "Hello there"}], tokenize=False)
    assert rendered.startswith(pre + "Hello there") and pre.endswith("user\n")


def test_write_requests_on_a_tiny_model():
    model = sc.tiny_llama(7, vocab_size=64)
    with torch.no_grad():  # make the end-of-message token likely, so messages end
        model.lm_head.weight[1] = model.lm_head.weight[1] * 0 + model.lm_head.weight.mean(0) * 4
    tok = _CharTokenizer()
    requests = write_requests(model, tok, 10, starters=("Tell me", ""), max_new_tokens=30, batch_size=8, progress=False,
                              require_finished=False, min_words=1, min_ascii=0.0, exclude=["tell me"])
    assert len(requests) == 10
    keys = {" ".join(r["request"].lower().split())[:80] for r in requests}
    assert len(keys) == 10 and "tell me" not in keys
    assert all(r["request"].startswith(r["starter"]) for r in requests)
    with pytest.raises(ValueError):
        write_requests(model, tok, 0)
    with pytest.raises(RuntimeError, match="passed the filters"):
        write_requests(model, tok, 5, max_new_tokens=4, batch_size=4, progress=False, min_words=50)


def test_the_eval_split_is_never_in_any_training_prompts():
    prompts = json.loads(distill.PROMPTS_FILE.read_text())
    evaluation = prompts["eval"]
    assert len(evaluation) >= 30 and len(set(evaluation)) == len(evaluation)
    key = lambda t: " ".join(t.lower().split())
    eval_keys = {key(p) for p in evaluation}
    training = list(prompts["train"])
    if distill.REQUESTS_FILE.is_file():
        training += [r["request"] for r in json.loads(distill.REQUESTS_FILE.read_text())["requests"]]
    assert not eval_keys & {key(p) for p in training}
    assert not any(e in key(t) for e in eval_keys for t in training)  # not even inside a longer request
    assert not eval_keys & {key(p) for p in prompts["heldout"]}
    with pytest.raises(SystemExit):
        distill.main(["data", "--split", "eval"])
