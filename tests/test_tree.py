"""Token trees on tiny models: the mask, one pass over a tree equal to each path fed alone, cache compaction equal to
recomputation, greedy output equal to the target's for dynamic and static trees with every cache kind, and sampled
output distributed as the target's (with a negative control that fails)."""
from collections import Counter

import pytest
import torch

import specdec_course as sc
from specdec_course.cache import new_cache
from specdec_course.tree import (TokenTree, accept_greedy, accept_sampling, compact_cache, expected_accepted_length,
                                 grow_tree, grow_tree_by_levels, static_tree, tree_generate, tree_logits, tree_mask,
                                 tree_positions)

from helpers import BigramLM, CharTokenizer, noisy_copy
from test_speculative import _chi_square

#               0   1  2  3  4  5  6
PARENTS = [-1, -1, 0, 0, 2, 1, 5]   # two children of the root; node 0 has children 2, 3; 2 → 4; 1 → 5 → 6
TOKENS = [11, 12, 13, 14, 15, 16, 17]
PROMPT = [5, 9, 3, 7, 5, 9, 3, 11, 5, 9]


def _tree():
    tree = TokenTree()
    for token, parent in zip(TOKENS, PARENTS):
        tree.add(token, parent)
    return tree


def test_the_tree_mask_lets_each_node_see_the_prefix_and_exactly_its_ancestors():
    mask = tree_mask(PARENTS, 3)
    tree = _tree()
    for i in range(len(PARENTS)):
        assert mask[i, :3].all()
        seen = {j for j in range(len(PARENTS)) if mask[i, 3 + j]}
        assert seen == set(tree.path(i)), f"node {i} sees {sorted(seen)}"
    assert tree_positions(PARENTS, 3).tolist() == [3, 3, 4, 4, 5, 4, 5]
    assert tree.path(6) == [1, 5, 6] and tree.children(0) == [2, 3] and tree.children(-1) == [0, 1]


def test_a_tree_refuses_twin_siblings_and_unknown_parents():
    tree = _tree()
    with pytest.raises(ValueError, match="siblings"):
        tree.add(13, 0)
    with pytest.raises(ValueError, match="parent 9"):
        tree.add(1, 9)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static", None])
def test_one_pass_over_a_tree_gives_each_node_the_logits_of_its_path_fed_alone(cache_kind):
    target = sc.tiny_llama(1, peaked=2.0)
    prompt = torch.tensor([PROMPT])
    tree = _tree()
    cache = None
    if cache_kind:
        cache = new_cache(target, cache_kind, 40)
        target(prompt[:, :6], past_key_values=cache, use_cache=True)  # part of the prefix cached already
    logits = tree_logits(target, prompt, tree, past_key_values=cache)
    assert logits.shape[0] == 1 + len(tree)
    with torch.no_grad():
        assert torch.allclose(logits[0], target(prompt).logits[0, -1], atol=1e-4)
        for i in range(len(tree)):
            path = torch.tensor([[tree.tokens[j] for j in tree.path(i)]])
            alone = target(torch.cat([prompt, path], 1)).logits[0, -1]
            assert torch.allclose(logits[1 + i], alone, atol=1e-4), f"node {i}"


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("kept", [[], [0], [1, 5, 6], [0, 3]])
def test_compaction_leaves_the_cache_as_recomputation_of_the_kept_path(cache_kind, kept):
    target = sc.tiny_llama(2, peaked=2.0)
    prompt = torch.tensor([PROMPT])
    tree = _tree()
    cache = new_cache(target, cache_kind, 40)
    tree_logits(target, prompt, tree, past_key_values=cache)
    compact_cache(cache, prompt.shape[1], kept)
    sequence = torch.cat([prompt, torch.tensor([[tree.tokens[i] for i in kept]], dtype=torch.long).view(1, -1)], 1)
    assert sc.cache.cache_length(cache) == sequence.shape[1]
    fresh = new_cache(target, "dynamic", 40)
    with torch.no_grad():
        target(sequence, past_key_values=fresh, use_cache=True)
    for ours, theirs in zip(cache.layers, fresh.layers):
        n = sequence.shape[1]
        assert torch.allclose(ours.keys[:, :, :n], theirs.keys[:, :, :n], atol=1e-5)
        assert torch.allclose(ours.values[:, :, :n], theirs.values[:, :, :n], atol=1e-5)


def test_greedy_acceptance_walks_the_targets_argmax_down_the_tree():
    tree = _tree()
    logits = torch.full((1 + len(tree), 20), -5.0)
    # row 0 is the root, row 1 + i node i: root → node 1 (12) → node 5 (16) → node 6 (17) → the target's 3
    for row, best in enumerate([12, 0, 16, 0, 0, 0, 17, 3]):
        logits[row, best] = 5.0
    path, token = accept_greedy(tree, logits)
    assert path == [1, 5, 6] and token == 3
    logits[0] = -5.0
    logits[0, 2] = 5.0
    assert accept_greedy(tree, logits) == ([], 2)  # the root's argmax is no child: nothing accepted, its own token


@pytest.mark.parametrize("cache_kind", ["dynamic", "static", None])
def test_tree_decoding_keeps_greedy_output_identical(cache_kind):
    target = sc.tiny_llama(1, peaked=2.0)
    draft = noisy_copy(target, 0.5, 3)
    reference = sc.autoregressive_generate(target, PROMPT, 24).tokens
    configs = [{"budget": 1}, {"budget": 4, "top_k": 2}, {"budget": 10, "top_k": 3}, {"shape": (1, 1, 1)},
               {"shape": (3, 2, 1)}, {"budget": 6, "top_k": 2, "levels": 3}, {"budget": 10, "top_k": 3, "levels": 4}]
    accepted = drafted = 0
    for config in configs:
        result = tree_generate(target, draft, PROMPT, 24, use_cache=cache_kind is not None,
                               cache_kind=cache_kind or "dynamic", **config)
        assert result.tokens == reference, f"{config}, cache {cache_kind}"
        accepted += sum(len(s.accepted) for s in result.steps)
        drafted += sum(len(s.tree) for s in result.steps)
    assert 0 < accepted < drafted  # guesses were both kept and refused


def test_a_wider_tree_keeps_more_tokens_per_pass_than_a_chain_of_the_same_draft():
    target = sc.tiny_llama(1, peaked=2.0)
    draft = noisy_copy(target, 0.8, 4)
    chain = tree_generate(target, draft, PROMPT, 40, shape=(1, 1, 1))
    tree = tree_generate(target, draft, PROMPT, 40, budget=12, top_k=3)
    assert tree.tokens == chain.tokens
    assert tree.tokens_per_pass > chain.tokens_per_pass


def test_the_grown_tree_is_best_first_by_path_probability_and_within_budget():
    target = sc.tiny_llama(1, peaked=2.0)
    tree = grow_tree(target, torch.tensor([PROMPT]), 6, top_k=3)
    assert len(tree) == 6
    assert tree.log_q == sorted(tree.log_q, reverse=True)  # best-first: each added node was the best candidate left
    assert 0 < expected_accepted_length(tree) <= len(tree)
    assert expected_accepted_length(tree, [1.0, 0.0]) == pytest.approx(
        sum(1 for i in range(len(tree)) if all(tree.children(tree.parents[j]).index(j) == 0 for j in tree.path(i))))
    assert static_tree((3, 2, 1)) == [-1, -1, -1, 0, 0, 3]


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_a_tree_grown_a_level_at_a_time_takes_one_draft_pass_per_level(cache_kind):
    target = sc.tiny_llama(1, peaked=2.0)
    draft = noisy_copy(target, 0.5, 3)
    prompt = torch.tensor([PROMPT])
    calls = []
    hook = draft.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        cache = new_cache(draft, cache_kind, 64)
        tree = grow_tree_by_levels(draft, prompt, 7, top_k=3, depth=4, past_key_values=cache)
    finally:
        hook.remove()
    assert len(calls) == 4, "the root's pass and one pass per further level"
    assert cache.get_seq_length() == len(PROMPT), "the draft's cache is left holding exactly the prefix"
    assert len(tree) == 7 and max(tree.depth(i) for i in range(len(tree))) <= 4
    for i, parent in enumerate(tree.parents):
        assert parent < i and (parent == -1 or tree.log_q[parent] >= tree.log_q[i])
    # the same tree without a cache (every pass over the prefix and all nodes): the same tokens and parents exactly; its
    # log q computed along another path (one pass over everything, not cached passes) agrees to float tolerance only
    uncached = grow_tree_by_levels(draft, prompt, 7, top_k=3, depth=4)
    assert (uncached.tokens, uncached.parents) == (tree.tokens, tree.parents)
    assert uncached.log_q == pytest.approx(tree.log_q, abs=1e-5)
    for i in range(len(tree)):
        path = [tree.tokens[j] for j in tree.path(i)]
        log_q = 0.0
        for k, token in enumerate(path):
            logits = draft(torch.cat([prompt, torch.tensor([path[:k]], dtype=torch.long)], 1)).logits[0, -1]
            log_q += torch.log_softmax(logits.float(), -1)[token].item()
        assert tree.log_q[i] == pytest.approx(log_q, abs=1e-4)
    with pytest.raises(ValueError, match="at least 1"):
        grow_tree_by_levels(draft, prompt, 4, depth=0)


@pytest.mark.parametrize("scheme", ["int4", "int4-exact"])
def test_trees_from_the_targets_quantized_copy(scheme):
    """The quantized self-draft's compact forward pass takes the tree mask and positions: one pass over a tree gives
    each node its path's logits, and trees grown from the copy (a node at a time, by levels, static) keep greedy output."""
    from specdec_course.drafters import quantized_copy

    target = sc.tiny_llama(0, peaked=2.0)
    copy = quantized_copy(target, scheme)
    copy.float_from = None  # 4 bits in every pass, so a pass over the tree and a pass over one path compute alike
    prompt, tree = torch.tensor([PROMPT]), _tree()
    logits = tree_logits(copy, prompt, tree)
    for node in range(len(tree)):
        path = torch.tensor([[tree.tokens[i] for i in tree.path(node)]])
        alone = copy(torch.cat([prompt, path], 1)).logits[0, -1]
        assert torch.allclose(logits[node + 1], alone, atol=1e-2, rtol=1e-2), f"node {node}"
    reference = sc.autoregressive_generate(target, PROMPT, 24).tokens
    for config in ({"budget": 5, "top_k": 2}, {"budget": 6, "top_k": 2, "levels": 3}, {"shape": (2, 1, 1)}):
        for cache_kind in ("dynamic", "static"):
            result = tree_generate(target, copy, PROMPT, 24, cache_kind=cache_kind, **config)
            assert result.tokens == reference, f"{scheme} {config} {cache_kind}"
            assert result.tokens_per_pass > 1.5  # the copy agrees with its target: paths are accepted


def test_prompt_lookup_offers_its_matches_as_branches():
    from specdec_course.drafters import PromptLookup, find_continuation, lookup_tree

    tokens = [1, 2, 7, 1, 2, 8, 5, 1, 2]
    tree = lookup_tree(tokens, 10, 3)   # "1 2" was followed by "8 5 1" (most recent) and by "7 1 2"
    assert (tree.tokens, tree.parents) == ([8, 5, 1, 7, 1, 2], [-1, 0, 1, -1, 3, 4])
    assert [tree.tokens[i] for i in tree.path(2)] == find_continuation(tokens, 3)  # the chain is the first branch
    assert lookup_tree(tokens, 4, 3).tokens == [8, 5, 1, 7]                         # the budget cuts the branches
    assert len(lookup_tree([1, 2, 3], 5, 3)) == 0                                   # nothing occurred before
    target = sc.tiny_llama(2, peaked=2.0)
    lookup = PromptLookup.for_model(target)
    reference = sc.autoregressive_generate(target, PROMPT, 24).tokens
    for kind in ("dynamic", "static", None):
        result = tree_generate(target, lookup, PROMPT, 24, budget=6, use_cache=kind is not None, cache_kind=kind or "dynamic")
        assert result.tokens == reference, f"cache {kind}"
    assert any(len(step.tree.children(node)) > 1 for step in result.steps for node in range(-1, len(step.tree))), \
        "no step's tree branched"


def test_sampling_with_prompt_lookup_trees_follows_the_targets_distribution():
    from specdec_course.drafters import PromptLookup

    gen = torch.Generator().manual_seed(5)
    target = BigramLM(torch.randn(5, 5, generator=gen) * 1.5)
    lookup = PromptLookup(5)
    counts = Counter(tuple(tree_generate(target, lookup, [2, 0, 2, 1, 2], 3, budget=4, temperature=1.0, seed=s,
                                         use_cache=False).tokens) for s in range(SAMPLES))
    stat, critical = _chi_square(counts, target.sequence_probs(2, 3, 1.0), SAMPLES)
    assert stat < critical, f"chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"


SAMPLES = 4_000


def _sampled(target, draft, n, accept=None, **config):
    import specdec_course.tree as tree_module

    saved = tree_module.accept_sampling
    if accept is not None:
        tree_module.accept_sampling = accept
    try:
        return Counter(tuple(tree_generate(target, draft, [2, 0], 3, temperature=1.0, seed=s, use_cache=False,
                                           **config).tokens) for s in range(n))
    finally:
        tree_module.accept_sampling = saved


@pytest.mark.parametrize("config", [{"budget": 4, "top_k": 2}, {"shape": (3, 1)}, {"budget": 4, "top_k": 2, "levels": 2}])
def test_sampling_with_trees_follows_the_targets_distribution(config):
    gen = torch.Generator().manual_seed(11)
    target = BigramLM(torch.randn(5, 5, generator=gen) * 1.5)
    draft = BigramLM(torch.randn(5, 5, generator=gen) * 1.5)
    counts = _sampled(target, draft, SAMPLES, **config)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, 1.0), SAMPLES)
    assert stat < critical, f"{config}: chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"


def test_a_tree_rule_that_trusts_the_first_guess_is_caught():
    gen = torch.Generator().manual_seed(11)
    target = BigramLM(torch.randn(5, 5, generator=gen) * 1.5)
    draft = BigramLM(torch.randn(5, 5, generator=gen) * 1.5)

    def first_guess_always(tree, probs, generator=None):
        path, node = [], -1
        while tree.children(node):
            node = tree.children(node)[0]
            path.append(node)
        return path, int(torch.multinomial(probs[node + 1], 1, generator=generator))

    counts = _sampled(target, draft, SAMPLES, accept=first_guess_always, budget=4, top_k=2)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, 1.0), SAMPLES)
    assert stat > critical, f"a wrong rule went unnoticed: chi-square {stat:.1f} <= {critical:.1f}"


def test_sampled_acceptance_at_one_node_gives_each_token_its_target_probability():
    tree = TokenTree()
    for token in (2, 0, 4):
        tree.add(token, -1)
    p = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25])
    probs = torch.stack([p] + [torch.full((5,), 0.2)] * 3)
    gen = torch.Generator().manual_seed(0)
    counts = Counter()
    for _ in range(20_000):
        path, token = accept_sampling(tree, probs, gen)
        counts[tree.tokens[path[0]] if path else token] += 1
    for y in range(5):
        assert counts[y] / 20_000 == pytest.approx(float(p[y]), abs=0.015)


# ----------------------------------------------------------------------------------------------- chains against trees
def test_the_tree_cost_model_with_set_costs():
    from specdec_course.perf.trees import draft_passes, nodes_of, predicted_speedup

    costs = {"T": {k: 10.0 + k for k in range(1, 18)}, "draft": 1.0}
    assert predicted_speedup(costs, 2.5, passes=4, nodes=4, overhead_ms=2.0) == pytest.approx(2.5 * 13.0 / (4 + 15 + 2))
    assert predicted_speedup(costs, 1.0, passes=0, nodes=0) == pytest.approx(1.0)  # no drafts: a target-only step
    assert (draft_passes("chain", 3), nodes_of("chain", 3)) == (3, 3)
    assert (draft_passes("tree", 8), nodes_of("tree", 8)) == (8, 8)
    assert (draft_passes("static", (4, 2, 1)), nodes_of("static", (4, 2, 1))) == (3, 7)
    assert (draft_passes("levels", (8, 3)), nodes_of("levels", (8, 3))) == (3, 8)
    with pytest.raises(ValueError, match="T\\(18\\)"):
        predicted_speedup(costs, 2.0, passes=17, nodes=17)
    with pytest.raises(ValueError, match="kind"):
        draft_passes("bush", 3)


def test_chain_and_tree_rows_side_by_side_with_their_predictions():
    from specdec_course.perf.trees import best_rows, format_tree_table, predicted_speedup, tree_benchmark

    target = sc.tiny_llama(3, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.6, 3)
    costs = {"T": {k: 5.0 + 0.5 * k for k in range(1, 10)}, "draft": 0.5}
    report = tree_benchmark(target, draft, CharTokenizer(), ["abc de", "fgh ij"], taus=(2, 3), budgets=(4, 8),
                            shapes=((3, 2, 1),), level_trees=((6, 3),), max_new_tokens=16, costs=costs, progress=False)
    kinds = [(r["kind"], r["setting"]) for r in report["rows"]]
    assert kinds == [("target", None), ("chain", 2), ("chain", 3), ("tree", 4), ("tree", 8), ("levels", (6, 3)),
                     ("static", (3, 2, 1))]
    assert all(r["identical"] for r in report["rows"]), "every chain and tree must reproduce target-only greedy"
    for r in report["rows"][1:]:
        assert r["predicted"] == pytest.approx(predicted_speedup(costs, r["tokens_per_pass"], r["draft_passes"],
                                                                 r["nodes"], report["overhead_ms"]))
    best = best_rows(report)
    assert best["tokens_per_pass_over_chain"] == pytest.approx(
        max(r["tokens_per_pass"] for r in report["rows"][3:]) / max(r["tokens_per_pass"] for r in report["rows"][1:3]))
    text = format_tree_table(report)
    assert "dynamic tree, 8 nodes" in text and "static tree 3-2-1" in text and "NO" not in text
    assert "dynamic tree, 6 nodes by levels" in text and report["rows"][5]["draft_passes"] == 3


def test_the_budget_is_chosen_from_the_costs_and_the_measured_tokens_per_pass():
    from specdec_course.perf.trees import choose_tree_budget

    target = sc.tiny_llama(3, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.6, 3)
    prompt = torch.tensor([PROMPT])
    free = {"T": {k: 10.0 for k in range(1, 18)}, "draft": 0.0}       # verification and drafting cost nothing extra
    steep = {"T": {k: 10.0 * k for k in range(1, 18)}, "draft": 5.0}   # every node costs a whole target pass
    cheap = choose_tree_budget(target, draft, prompt, budgets=(1, 4, 16), costs=free, max_new_tokens=20)
    dear = choose_tree_budget(target, draft, prompt, budgets=(1, 4, 16), costs=steep, max_new_tokens=20)
    per_pass = cheap["tokens_per_pass"]
    assert per_pass[16] >= per_pass[4] >= per_pass[1]
    assert cheap["budget"] == max(per_pass, key=per_pass.get)   # free nodes: the tree that keeps the most
    assert dear["budget"] == 1                                   # dear nodes: the smallest tree
    with pytest.raises(ValueError, match="budgets"):
        choose_tree_budget(target, draft, prompt, budgets=(0,), costs=free)


def test_trees_grown_by_levels_are_priced_one_draft_pass_per_level_on_the_benchmarks_own_prompts():
    from specdec_course.models import chat_prompt
    from specdec_course.perf.trees import choose_tree_budget, predicted_speedup, tree_benchmark

    target = sc.tiny_llama(3, vocab_size=64, peaked=2.0)
    draft = noisy_copy(target, 0.6, 3)
    tokenizer, prompts = CharTokenizer(), ["abc de", "fgh ij"]
    ids = [chat_prompt(tokenizer, p) for p in prompts]
    costs = {"T": {k: 10.0 + 0.5 * k for k in range(1, 18)}, "draft": 4.0}   # set costs: a dear draft pass
    by_levels = choose_tree_budget(target, draft, ids, budgets=(1, 2, 8, 16), costs=costs, max_new_tokens=16,
                                   overhead_ms=2.0, levels=3, eos_token_id=tokenizer.eos_token_id)
    by_nodes = choose_tree_budget(target, draft, ids, budgets=(1, 2, 8, 16), costs=costs, max_new_tokens=16,
                                  overhead_ms=2.0, eos_token_id=tokenizer.eos_token_id)
    assert by_levels["draft_passes"] == {1: 1, 2: 2, 8: 3, 16: 3}          # one per level, never more than the nodes
    assert by_nodes["draft_passes"] == {1: 1, 2: 2, 8: 8, 16: 16}          # one per node
    for choice in (by_levels, by_nodes):
        for b, x in choice["predicted"].items():
            assert x == pytest.approx(predicted_speedup(costs, choice["tokens_per_pass"][b], choice["draft_passes"][b],
                                                        b, 2.0))
        assert choice["budget"] == max(choice["predicted"], key=choice["predicted"].get)
    # calibrated on the benchmark's own prompts, the choice sees the tokens per pass the benchmark measures
    report = tree_benchmark(target, draft, tokenizer, prompts, taus=(2,), budgets=(), shapes=(), level_trees=((8, 3),),
                            max_new_tokens=16, costs=costs, progress=False)
    (row,) = [r for r in report["rows"] if r["kind"] == "levels"]
    assert by_levels["tokens_per_pass"][8] == pytest.approx(row["tokens_per_pass"])
    assert 0 <= report["target_drift"] < 10
    with pytest.raises(ValueError, match="levels"):
        choose_tree_budget(target, draft, ids, budgets=(2,), costs=costs, levels=0)
