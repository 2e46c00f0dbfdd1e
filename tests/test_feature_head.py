"""The feature head: its training-time test is exactly what drafting does; drafting with it keeps the output lossless;
its state rolls back to what recomputation gives; one training step lowers its loss; its answers file stays compact."""
import itertools
from collections import Counter
from functools import lru_cache

import pytest
import torch

import specdec_course as sc
from specdec_course import speculative
from specdec_course.answers import load_answers, save_answers
from specdec_course.drafters import FeatureHead, FeatureHeadDrafter
from specdec_course.drafters.feature_head import target_features, train_head, training_loss
from conftest import first_mismatch_margin
from test_speculative import _chi_square

PROMPT = [5, 9, 3, 7, 5, 9, 3, 11, 5, 9]


def _features(model, ids):
    """What the model's output layer reads for every position of ``ids`` (1, n): (n, hidden)."""
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(ids)
    hook.remove()
    return seen[0][0]


@lru_cache(maxsize=None)
def _trained_head_state(seed: int):
    """A head trained a little on the tiny target's own greedy continuations, so its drafts are sometimes right."""
    target = sc.tiny_llama(seed, peaked=2.0)
    gen = torch.Generator().manual_seed(seed)
    sequences = [torch.tensor(p + sc.autoregressive_generate(target, p, 30).tokens)
                 for p in (torch.randint(2, 64, (6,), generator=gen).tolist() for _ in range(8))]
    features, labels = target_features(target, sequences)
    head = FeatureHead.for_target(target, torch.arange(64))
    train_head(head, features, sequences, labels, [6] * len(sequences), steps=40, batch_size=4, lr=3e-3, depth=2)
    return {k: v.clone() for k, v in head.state_dict().items()}


def trained_head_drafter(target, seed: int) -> FeatureHeadDrafter:
    head = FeatureHead.for_target(target, torch.arange(64))
    head.load_state_dict(_trained_head_state(seed))
    return FeatureHeadDrafter(target, head.eval())


def test_training_time_test_gives_exactly_the_logits_drafting_gives():
    target = sc.tiny_llama(0, peaked=2.0)
    head = FeatureHead.for_target(target, torch.arange(0, 64, 2))
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(0))
    f = _features(target, ids)
    with torch.no_grad():
        depths = head.training_logits(f[:-1], ids[0, 1:], depth=3)  # row i: position i + 1
        for known in (3, 8, 12):  # the target's features are known up to position known − 1
            cache = head.new_cache(40)
            g = head.step(f[:known], ids[0, 1:known + 1], cache, 1)[-1:]
            assert torch.allclose(head.subset_logits(g)[0], depths[0][known - 1], atol=1e-5)
            for d in (2, 3):  # deeper: the head's own guess of the feature and the next (here: true) token
                g = head.step(g, ids[0, known + d - 1:known + d], cache, known + d - 1)
                assert torch.allclose(head.subset_logits(g)[0], depths[d - 1][known + d - 2], atol=1e-5), (known, d)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static", None])
def test_drafting_with_a_feature_head_keeps_greedy_output_identical(cache_kind):
    target = sc.tiny_llama(1, peaked=2.0)
    reference = sc.autoregressive_generate(target, PROMPT, 24).tokens
    accepted = 0
    for tau in (1, 3, 6):
        drafter = trained_head_drafter(target, 1)
        result = speculative.speculative_generate(target, drafter, PROMPT, 24, tau=tau, use_cache=cache_kind is not None,
                                                  cache_kind=cache_kind or "dynamic", debug=True)
        position, margin = first_mismatch_margin(target, torch.tensor([PROMPT]), reference, result.tokens)
        assert result.tokens == reference, f"τ = {tau}, cache {cache_kind}: first mismatch at {position}, margin {margin}"
        assert result.steps[0].tau == 0, "before verification has handed it a feature, the head proposes nothing"
        accepted += sum(s.n_accepted for s in result.steps)
        rejected = sum(s.n_accepted < s.tau for s in result.steps)
        assert rejected, "the test means something only when some drafts are rejected"
    assert accepted, "no draft of the trained head was ever accepted"


def test_rollback_of_the_feature_head_equals_recomputation():
    target = sc.tiny_llama(1, peaked=2.0)
    prompt = torch.tensor([PROMPT])
    n = prompt.shape[1]
    drafter = trained_head_drafter(target, 1)
    drafter.start(prompt, max_length=64)
    drafter.observe_features(_features(target, prompt), first_position=0)  # the first step's verification
    first = drafter.propose(prompt, 5)
    assert len(first.tokens) == 5
    extended = torch.cat([prompt, torch.tensor([first.tokens])], dim=1)
    drafter.observe_features(_features(target, extended)[n - 1:], first_position=n - 1)  # verification of the drafts
    drafter.rollback(n + 2)                                                             # two drafts kept
    assert drafter.state_length() <= n + 2
    drafter.check_state(extended)
    kept = extended[:, :n + 3]  # the kept drafts and one more token
    again = drafter.propose(kept, 4)
    fresh = trained_head_drafter(target, 1)
    fresh.start(kept, max_length=64)
    fresh.observe_features(_features(target, kept[:, :n + 2]), first_position=0)
    expected = fresh.propose(kept, 4)
    assert again.tokens == expected.tokens
    assert torch.allclose(again.q, expected.q, atol=1e-5)


def test_one_training_step_lowers_the_loss_on_its_batch():
    target = sc.tiny_llama(2, peaked=2.0)
    head = FeatureHead.for_target(target, torch.arange(64))
    ids = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(2))
    f = _features(target, ids)
    with torch.no_grad():
        labels = target(ids).logits[0].argmax(-1)
    before, accuracy = training_loss(head, f[:-1], ids[0, 1:], labels[1:], depth=3)
    assert len(accuracy) == 3
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    before.backward()
    optimizer.step()
    after, _ = training_loss(head, f[:-1], ids[0, 1:], labels[1:], depth=3)
    assert after.item() < before.item()
    assert head.embed.grad is None and not head.out_rows.requires_grad, "the target's rows stay frozen"


def _exact_probs(target, prompt, length):
    """Probability of every continuation of ``length`` tokens when sampling from ``target`` at temperature 1."""
    vocab = target.config.vocab_size
    out = {}
    with torch.no_grad():
        for seq in itertools.product(range(vocab), repeat=length):
            probs = torch.softmax(target(torch.tensor([prompt + list(seq)])).logits[0, len(prompt) - 1:-1], -1)
            out[seq] = float(torch.prod(probs[torch.arange(length), torch.tensor(seq)]))
    return out


@pytest.mark.parametrize("wrong_q", [False, True])
def test_sampling_with_a_feature_head_follows_the_targets_distribution(wrong_q, monkeypatch):
    """With the head's own q the output follows the target's distribution; reporting a uniform q instead (negative
    control) breaks it, and the same chi-square sees it."""
    target = sc.tiny_llama(5, vocab_size=3, hidden_size=16, peaked=3.0)
    prompt, length, samples = [0, 2, 1], 4, 2000
    drafter = FeatureHeadDrafter(target, FeatureHead.for_target(target))
    if wrong_q:
        propose = drafter.propose

        def uniform_q(sequence, tau, **kwargs):
            draft = propose(sequence, tau, **kwargs)
            return sc.Draft(draft.tokens, torch.full_like(draft.q, 1.0 / draft.q.shape[1]))

        monkeypatch.setattr(drafter, "propose", uniform_q)
    counts, drafted = Counter(), 0
    for seed in range(samples):
        result = speculative.speculative_generate(target, drafter, prompt, length, tau=2, rule="sampling",
                                                  temperature=1.0, seed=seed)
        counts[tuple(result.tokens)] += 1
        drafted += result.drafted
    stat, critical = _chi_square(counts, _exact_probs(target, prompt, length), samples)
    assert drafted >= samples, "the head drafted too little for the test to mean anything"
    if wrong_q:
        assert stat > critical, f"a wrong q went unnoticed: chi-square {stat:.1f} <= {critical:.1f}"
    else:
        assert stat < critical, f"chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"


# ---------------------------------------------------------------- token trees from the head
@pytest.mark.parametrize("cache_kind", ["dynamic", "static", None])
def test_trees_from_a_feature_head_keep_greedy_output_identical(cache_kind):
    from specdec_course.tree import tree_generate

    target = sc.tiny_llama(1, peaked=2.0)
    reference = sc.autoregressive_generate(target, PROMPT, 24).tokens
    accepted = drafted = branched = 0
    for config in ({"budget": 1, "levels": 1}, {"budget": 4, "top_k": 2, "levels": 3}, {"budget": 10, "top_k": 3}):
        drafter = trained_head_drafter(target, 1)
        result = tree_generate(target, drafter, PROMPT, 24, use_cache=cache_kind is not None,
                               cache_kind=cache_kind or "dynamic", **config)
        position, margin = first_mismatch_margin(target, torch.tensor([PROMPT]), reference, result.tokens)
        assert result.tokens == reference, f"{config}, cache {cache_kind}: first mismatch at {position}, margin {margin}"
        assert len(result.steps[0].tree) == 0, "before verification has handed it a feature, the head proposes nothing"
        assert all(len(s.tree) == min(config["budget"], len(s.tree)) for s in result.steps)
        accepted += sum(len(s.accepted) for s in result.steps)
        drafted += sum(len(s.tree) for s in result.steps)
        branched += sum(len(s.tree.children(-1)) > 1 for s in result.steps)
        if cache_kind is not None:  # the head's cache holds the kept positions' true entries, as recomputed
            sequence = torch.tensor([PROMPT + result.tokens])
            drafter.check_state(sequence)
            known = drafter.known  # the features handed over are the target's own, of the accepted path's positions
            assert known >= len(PROMPT) and torch.allclose(drafter.features[:known], _features(target, sequence)[:known],
                                                            atol=1e-4)
            assert drafter.state_length() <= len(PROMPT) + len(result.tokens)
    assert 0 < accepted < drafted and branched, (accepted, drafted, branched)
    with pytest.raises(ValueError, match="levels, not a shape"):
        tree_generate(target, trained_head_drafter(target, 1), PROMPT, 4, shape=(2, 1))


def test_a_feature_head_tree_gives_each_node_the_q_of_its_path_drafted_alone():
    """One head pass per level over a tree mask: each node's log q equals drafting its path one guess at a time."""
    target = sc.tiny_llama(1, peaked=2.0)
    prompt = torch.tensor([PROMPT])
    drafter = trained_head_drafter(target, 1)
    drafter.start(prompt, max_length=64)
    drafter.observe_features(_features(target, prompt)[:-1], first_position=0)
    calls = []
    hook = drafter.head.qkv.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        tree = drafter.propose_tree(prompt, 7, top_k=3, levels=3)
    finally:
        hook.remove()
    assert len(calls) == 3, "the pass over the prefix and one pass per further level"
    assert len(tree) == 7 and drafter.cache.length == len(PROMPT) - 1, "only the true entries stay in the head's cache"
    head = drafter.head
    for node in range(len(tree)):
        cache = head.new_cache(64)
        g = head.step(drafter.features[:len(PROMPT) - 1], prompt[0, 1:], cache, 1)[-1:]
        log_q = 0.0
        for depth, i in enumerate(tree.path(node)):
            log_q += torch.log_softmax(drafter._logits(g)[0], -1)[tree.tokens[i]].item()
            g = head.step(g, torch.tensor([tree.tokens[i]]), cache, len(PROMPT) + depth)
        assert tree.log_q[node] == pytest.approx(log_q, abs=1e-4), f"node {node}"


def test_sampling_with_feature_head_trees_follows_the_targets_distribution():
    from specdec_course.tree import tree_generate

    target = sc.tiny_llama(5, vocab_size=3, hidden_size=16, peaked=3.0)
    prompt, length, samples = [0, 2, 1], 3, 700
    drafter = FeatureHeadDrafter(target, FeatureHead.for_target(target))
    counts, drafted = Counter(), 0
    for seed in range(samples):
        result = tree_generate(target, drafter, prompt, length, budget=3, top_k=2, levels=2, temperature=1.0, seed=seed,
                               use_cache=False)
        counts[tuple(result.tokens)] += 1
        drafted += sum(len(s.tree) for s in result.steps)
    stat, critical = _chi_square(counts, _exact_probs(target, prompt, length), samples)
    assert drafted >= samples, "the head drafted too little for the test to mean anything"
    assert stat < critical, f"chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"


def test_a_head_saves_and_loads_and_refuses_another_target(tmp_path):
    target = sc.tiny_llama(0)
    head = FeatureHead.for_target(target, torch.arange(10, 40))
    head.save(tmp_path / "head")
    loaded = FeatureHead.load(tmp_path / "head", target)
    assert loaded.token_ids.tolist() == list(range(10, 40))
    for (name, a), (_, b) in zip(head.state_dict().items(), loaded.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-2 * a.abs().max().item() + 1e-6), name  # stored in bfloat16
    with pytest.raises(ValueError, match="made for a target with 64 tokens"):
        FeatureHead.load(tmp_path / "head", sc.tiny_llama(0, vocab_size=32))
    with pytest.raises(FileNotFoundError, match="distill head"):
        FeatureHead.load(tmp_path / "nothing", target)
    with pytest.raises(ValueError, match="leave draft_input_ids out"):
        speculative.speculative_generate(target, FeatureHeadDrafter(target, loaded), [1, 2, 3], 4, draft_input_ids=[1, 2])


def test_the_answers_file_round_trips_compactly_and_appends(tmp_path):
    path = tmp_path / "answers.npz"
    assert load_answers(path)["sequences"] == []
    answers = {"sequences": [torch.tensor([1, 2, 3, 49151]), torch.tensor([7, 8])], "prompt_lengths": [2, 1],
               "request_index": [4, 0], "meta": {"seconds": 1.5}}
    save_answers(answers, path)
    back = load_answers(path)
    assert [s.tolist() for s in back["sequences"]] == [[1, 2, 3, 49151], [7, 8]]
    assert back["prompt_lengths"] == [2, 1] and back["request_index"] == [4, 0] and back["meta"]["seconds"] == 1.5
    back["sequences"].append(torch.tensor([9]))
    back["prompt_lengths"].append(1)
    back["request_index"].append(7)
    save_answers(back, path)
    assert len(load_answers(path)["sequences"]) == 3
    assert not list(tmp_path.glob("*.writing*")), "no half-written file is left behind"
    with pytest.raises(ValueError, match="uint16"):
        save_answers({"sequences": [torch.tensor([70000])], "prompt_lengths": [1], "request_index": [0], "meta": {}}, path)


# ---------------------------------------------------------------- the shipped head on the real target
@pytest.mark.real
def test_the_shipped_head_loads_offline_and_keeps_the_real_targets_greedy_output(target):
    from specdec_course.drafters import load_feature_head
    from test_generation import PROMPTS

    model, tokenizer = target
    drafter = load_feature_head(model)  # the package's own files: nothing is downloaded (HF_HUB_OFFLINE in the tests)
    accepted = drafted = 0
    for prompt in PROMPTS[:3]:
        ids = sc.chat_prompt(tokenizer, prompt)
        reference = sc.autoregressive_generate(model, ids, 48).tokens
        result = speculative.speculative_generate(model, drafter, ids, 48, tau=3)
        position, margin = first_mismatch_margin(model, ids, reference, result.tokens)
        assert result.tokens == reference, f"{prompt!r}: first mismatch at new token {position}, top-2 logit margin {margin}"
        accepted += sum(s.n_accepted for s in result.steps)
        drafted += result.drafted
    assert 0 < accepted < drafted, f"the shipped head had {accepted} of {drafted} drafts accepted"
