"""Exercise 10's checks (visible and hidden) accept right answers and name the usual mistakes. Hand-made trees only."""
import pytest
import torch

from helpers import hidden_failure
from specdec_course.course import checks, hidden_checks, references
from specdec_course.tree import TokenTree, accept_greedy, tree_mask as reference_mask


def tree_mask(parents, prefix_length):
    return reference_mask(parents, prefix_length)


def longest_accepted_path(tokens, parents, target_argmax):
    tree = TokenTree(list(tokens), list(parents), [0.0] * len(tokens))
    logits = torch.nn.functional.one_hot(torch.tensor(target_argmax), 32).float()
    return accept_greedy(tree, logits)


def best_static_shape(alpha_of_rank, cost_curve, c, max_nodes):
    values = references.static_shape_values(alpha_of_rank, cost_curve, c, max_nodes)
    return max(values, key=values.get)


def test_right_answers_pass_the_visible_and_the_hidden_checks(capsys):
    checks.check_tree_mask(tree_mask)
    checks.check_longest_accepted_path(longest_accepted_path)
    checks.check_best_static_shape(best_static_shape)
    namespace = {"tree_mask": tree_mask, "longest_accepted_path": longest_accepted_path,
                 "best_static_shape": best_static_shape}
    for cell in hidden_checks.HIDDEN["10_token_trees"]:
        hidden_checks.run("10_token_trees", cell, namespace)
    assert capsys.readouterr().out.count("✓") == 6


def test_the_checks_reference_walk_on_hand_made_trees():
    assert references.tree_walk([1, 2, 3], [-1, 0, 0], [1, 3, 8, 9]) == ([0, 2], 9)   # the task's example
    assert references.tree_walk([5], [-1], [4, 6]) == ([], 4)                          # nothing accepted: the correction
    assert references.tree_walk([4, 5], [-1, -1], [5, 0, 7]) == ([1], 7)               # the second sibling matches
    assert references.tree_walk([4, 5, 6], [-1, 0, 1], [4, 5, 6, 12]) == ([0, 1, 2], 12)  # a leaf: the bonus token


def test_a_causal_mask_is_caught_as_seeing_a_sibling():
    def causal(parents, prefix_length):
        m = len(parents)
        return torch.ones(m, prefix_length + m, dtype=torch.bool).tril(diagonal=prefix_length)

    with pytest.raises(checks.CheckFailed, match="sibling or a cousin"):
        checks.check_tree_mask(causal)


def test_a_mask_without_the_node_itself_is_caught():
    def no_self(parents, prefix_length):
        mask = reference_mask(parents, prefix_length)
        mask[torch.arange(len(parents)), prefix_length + torch.arange(len(parents))] = False
        return mask

    with pytest.raises(checks.CheckFailed, match="attends to itself"):
        checks.check_tree_mask(no_self)


def test_a_mask_of_parents_only_fails_the_hidden_check_too():
    def parent_only(parents, prefix_length):
        m = len(parents)
        mask = torch.zeros(m, prefix_length + m, dtype=torch.bool)
        mask[:, :prefix_length] = True
        for i, parent in enumerate(parents):
            mask[i, prefix_length + i] = True
            if parent >= 0:
                mask[i, prefix_length + parent] = True
        return mask

    with pytest.raises(checks.CheckFailed):
        checks.check_tree_mask(parent_only)
    with pytest.raises(checks.CheckFailed, match="hidden case"):
        hidden_checks.run("10_token_trees", "s1004", {"tree_mask": parent_only})


def test_a_walk_that_tries_only_first_children_is_caught():
    def first_child_only(tokens, parents, target_argmax):
        path, node = [], -1
        while True:
            children = [c for c, p in enumerate(parents) if p == node]
            if not children or tokens[children[0]] != target_argmax[node + 1]:
                return path, target_argmax[node + 1]
            node = children[0]
            path.append(node)

    with pytest.raises(checks.CheckFailed, match="any sibling"):
        checks.check_longest_accepted_path(first_child_only)


def test_a_walk_that_returns_the_roots_token_is_caught():
    def wrong_token(tokens, parents, target_argmax):
        path, _ = longest_accepted_path(tokens, parents, target_argmax)
        return path, target_argmax[0]

    with pytest.raises(checks.CheckFailed, match="LAST accepted node"):
        checks.check_longest_accepted_path(wrong_token)


def test_a_shape_choice_that_ignores_the_draft_passes_is_caught():
    def free_drafting(alpha_of_rank, cost_curve, c, max_nodes):
        return best_static_shape(alpha_of_rank, cost_curve, 0.0, max_nodes)

    def widest(alpha_of_rank, cost_curve, c, max_nodes):
        return (max_nodes,)

    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_best_static_shape(free_drafting)
    with pytest.raises(checks.CheckFailed, match="expected"):
        checks.check_best_static_shape(widest)


def test_shape_values_follow_the_formula():
    curve = {k: 1.0 + 0.1 * (k - 1) for k in range(1, 10)}
    values = references.static_shape_values([0.5, 0.2], curve, 0.1, 3)
    assert len(values) == 7  # 1 + 2 + 4 compositions of 1, 2 and 3 nodes
    assert values[(1,)] == pytest.approx(1.5 / (0.1 + 1.1))
    assert values[(2, 1)] == pytest.approx((1 + 0.7 + 0.5 * 0.5) / (0.2 + 1.3))
    assert values[(3,)] == pytest.approx(1.7 / (0.1 + 1.3))  # a third choice the profile does not list adds nothing


def _hidden_failure(cell, fn) -> str:
    return hidden_failure("10_token_trees", cell, fn)


def test_hidden_failures_name_the_mistake_without_the_expected_answer():
    def wrong_token(tokens, parents, target_argmax):
        path, _ = longest_accepted_path(tokens, parents, target_argmax)
        return path, target_argmax[0]

    def free_drafting(alpha_of_rank, cost_curve, c, max_nodes):
        return best_static_shape(alpha_of_rank, cost_curve, 0.0, max_nodes)

    def chain(alpha_of_rank, cost_curve, c, max_nodes):
        return (1,) * max_nodes

    assert "the token after it is wrong" in _hidden_failure("s1007", wrong_token)
    for fn in (free_drafting, chain):
        message = _hidden_failure("s1010", fn)
        assert "not the shape with the largest predicted speedup" in message
        assert "got (" in message   # the learner's own shape and its speedup, never the best one


def test_the_free_text_rubric_matches_the_task():
    """The rubric of Task 4 quotes the CPU curve the task states (T(17)/T(1) = 2.12) and charges a static tree one draft
    pass per level."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "solutions" / "10_token_trees.ipynb").read_text())
    text = {c["id"]: "".join(c["source"]) for c in nb["cells"]}
    assert "T(17)/T(1) = 2.12" in text["s1013"] and "T(17)/T(1) = 2.12" in text["s1014"]
    assert "grows by\nhalf" not in text["s1014"] and "every level of a static tree" in text["s1014"]
