"""Token trees: several guesses for each position, all verified in one target pass.

A chain of τ drafts dies at its first wrong token, yet the draft's second or third choice there is often right. A
**token tree** keeps such alternatives as siblings. Node i holds a token t_i and a parent π(i) (−1: the prefix's last
token, the root); the path from the root to a node is one possible continuation. The target reads every node in one
pass, each node attending to the prefix and to its own ancestors only, at the position its depth gives it:

    mask[i, j] = 1   if j is a prefix position, or node j is node i or one of its ancestors
    position(i) = n + depth(i) − 1          (n prefix tokens; depth 1 = a child of the root)

so the target's distribution at node i is exactly p(· | prefix, path to i), as if that path had been fed alone.
Acceptance walks down from the root. Greedy: the target's argmax at the current node must be one of its children;
the walk moves into that child and stops where none matches, and the argmax there is the correction (or bonus) token.
Sampling: the children are distinct fixed guesses, tried in turn: accept guess g with probability p(g); if it is
refused, p ← p with g removed, renormalised, and the next sibling is tried; if every child is refused, the token is
drawn from what is left of p. Each step of that walk emits a token distributed exactly as p, so the output follows
the target's distribution, like the chain's rule with a one-hot q.

After the step only the accepted path may stay in the caches: ``compact_cache`` keeps the prefix's entries and the
accepted nodes', in order, and drops the rest.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import torch

from .cache import cache_length, is_static, rollback

DEFAULT_LEVELS = 4  # draft passes of a tree grown a level at a time, unless told


@dataclass
class TokenTree:
    """Nodes in the order they were added: ``tokens[i]``, ``parents[i]`` (−1: the root, the prefix's last token) and
    ``log_q[i]``, the draft's log-probability of the path from the root to node i."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    log_q: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int, log_q: float = 0.0) -> int:
        if not -1 <= parent < len(self):
            raise ValueError(f"parent {parent} is not a node of this {len(self)}-node tree (or −1, the root)")
        if token in [self.tokens[c] for c in self.children(parent)]:
            raise ValueError(f"token {token} is already a child of node {parent}: siblings must differ")
        self.tokens.append(int(token))
        self.parents.append(int(parent))
        self.log_q.append(float(log_q))
        return len(self) - 1

    def children(self, node: int) -> list[int]:
        """The children of ``node`` (−1: the root), in the order they were added."""
        return [i for i, p in enumerate(self.parents) if p == node]

    def path(self, node: int) -> list[int]:
        """Node indices from the root's child down to ``node``."""
        nodes = []
        while node != -1:
            nodes.append(node)
            node = self.parents[node]
        return nodes[::-1]

    def depth(self, node: int) -> int:
        return len(self.path(node))

    @classmethod
    def chain(cls, tokens) -> "TokenTree":
        """A chain is the tree whose every node has one child."""
        tree = cls()
        for i, token in enumerate(tokens):
            tree.add(token, i - 1)
        return tree


def tree_mask(parents, prefix_length: int) -> torch.Tensor:
    """(m, prefix_length + m) booleans: row i lets node i see every prefix position and its own ancestors and itself."""
    m = len(parents)
    mask = torch.zeros(m, prefix_length + m, dtype=torch.bool)
    mask[:, :prefix_length] = True
    for i in range(m):
        node = i
        while node != -1:
            mask[i, prefix_length + node] = True
            node = parents[node]
    return mask


def tree_positions(parents, prefix_length: int) -> torch.Tensor:
    """The position of each node: prefix_length + depth − 1."""
    depths = []
    for i, parent in enumerate(parents):
        depths.append(1 if parent == -1 else depths[parent] + 1)
    return torch.tensor(depths, dtype=torch.long) + prefix_length - 1


def _fit_to_cache(allowed: torch.Tensor, cache, needed: int) -> torch.Tensor:
    """A mask's columns widened to a static cache's capacity (the positions beyond ``needed`` hidden), else as it is."""
    if cache is None or not is_static(cache):
        return allowed
    capacity = cache.layers[0].max_cache_len
    if needed > capacity:
        raise ValueError(f"the static cache holds {capacity} positions; the prefix and the tree need {needed}")
    return torch.cat([allowed, torch.zeros(allowed.shape[0], capacity - allowed.shape[1], dtype=torch.bool)], 1)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive form attention adds to its scores: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)


@torch.no_grad()
def tree_logits(model, input_ids: torch.Tensor, tree: TokenTree, *, past_key_values=None,
                on_features=None) -> torch.Tensor:
    """The model's logits (1 + m, vocab) at the root (the prefix's last token) and at each of the m nodes, from one pass:
    the prefix tokens the cache has not seen (causally) and every node (tree mask). The cache then holds the prefix and
    all m nodes, in node order; ``compact_cache`` keeps the accepted ones. ``on_features(features, first_position)``:
    called with the model's last hidden states of the fed rows: the prefix's from ``first_position``, then each node's."""
    from .verify import output_layer_inputs

    n = input_ids.shape[1]
    seen = cache_length(past_key_values)
    if seen >= n:
        raise ValueError(f"the cache already holds {seen} tokens of a {n}-token prefix; roll it back so the prefix's "
                         "last token is fed")
    device = input_ids.device
    nodes = torch.tensor([tree.tokens], dtype=torch.long, device=device).view(1, -1)
    fed = torch.cat([input_ids[:, seen:], nodes], dim=1)
    new = n - seen
    # rows of the unseen prefix tokens: causal; rows of nodes: the whole prefix and their ancestors
    allowed = torch.zeros(fed.shape[1], n + len(tree), dtype=torch.bool)
    allowed[:new, :n] = torch.ones(new, n, dtype=torch.bool).tril(diagonal=seen)
    allowed[new:] = tree_mask(tree.parents, n)
    positions = torch.cat([torch.arange(seen, n), tree_positions(tree.parents, n)]).view(1, -1).to(device)
    allowed = _fit_to_cache(allowed, past_key_values, n + len(tree))
    mask = _additive(allowed, getattr(model, "dtype", torch.float32))[None, None].to(device)
    with output_layer_inputs(model, on_features is not None) as read:
        if past_key_values is not None:
            logits = model(fed, attention_mask=mask, position_ids=positions, past_key_values=past_key_values,
                           use_cache=True).logits
        else:
            logits = model(fed, attention_mask=mask, position_ids=positions, use_cache=False).logits
    if on_features is not None:
        on_features(read[-1][0], first_position=seen)
    return logits[0, new - 1:]


def compact_cache(cache, prefix_length: int, kept_nodes) -> None:
    """Keep the first ``prefix_length`` positions and then the entries of ``kept_nodes`` (node indices after the prefix,
    in path order); drop every other node's entries. The cache then equals one filled by the prefix and the kept path."""
    if cache is None:
        return
    kept = [prefix_length + i for i in kept_nodes]
    if kept == list(range(prefix_length, prefix_length + len(kept))):
        rollback(cache, prefix_length + len(kept))  # the path is the first nodes: cutting off the rest is enough
        return
    index = torch.tensor(kept, dtype=torch.long)
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            moved = tensor[:, :, index.to(tensor.device)].clone()
            tensor[:, :, prefix_length:prefix_length + len(kept)] = moved
    rollback(cache, prefix_length + len(kept))


@torch.no_grad()
def grow_tree(draft, input_ids: torch.Tensor, budget: int, *, top_k: int = 4, max_depth: int = 8,
              past_key_values=None) -> TokenTree:
    """A dynamic tree (EAGLE-2's idea): ``budget`` nodes chosen best-first by the draft's path probability. Each added
    node costs one draft pass (over its path, on top of the cached prefix), which gives its ``top_k`` children as
    candidates; the candidate with the highest log q of its whole path is added next.

    The draft's cache (``past_key_values``) must hold at most the prefix; it is left holding exactly the prefix."""
    if budget < 1:
        raise ValueError(f"a tree needs a budget of at least 1 node, got {budget}")
    n = input_ids.shape[1]
    if past_key_values is None:
        root = draft(input_ids, use_cache=False).logits[0, -1]
    else:  # read the prefix the cache has not seen (at least its last token, whose logits the root needs)
        rollback(past_key_values, min(cache_length(past_key_values), n - 1))
        root = draft(input_ids[:, cache_length(past_key_values):], past_key_values=past_key_values,
                     use_cache=True).logits[0, -1]

    def log_q_after(node: int) -> torch.Tensor:
        """log q(· | prefix, path to node) (node −1: the prefix itself)."""
        if node == -1:
            return torch.log_softmax(root.float(), dim=-1)
        path = torch.tensor([[tree.tokens[i] for i in tree.path(node)]], dtype=torch.long, device=input_ids.device)
        if past_key_values is None:
            logits = draft(torch.cat([input_ids, path], 1), use_cache=False).logits[0, -1]
        else:
            logits = draft(path, past_key_values=past_key_values, use_cache=True).logits[0, -1]
            rollback(past_key_values, n)
        return torch.log_softmax(logits.float(), dim=-1)

    tree = TokenTree()
    candidates = []  # (−path log q, order, parent, token)
    order = 0

    def expand(node: int, base: float):
        nonlocal order
        if node != -1 and tree.depth(node) >= max_depth:
            return
        values, tokens = log_q_after(node).topk(top_k)
        for value, token in zip(values.tolist(), tokens.tolist()):
            heapq.heappush(candidates, (-(base + value), order, node, token))
            order += 1

    expand(-1, 0.0)
    while len(tree) < budget and candidates:
        score, _, parent, token = heapq.heappop(candidates)
        node = tree.add(token, parent, -score)
        if len(tree) < budget:
            expand(node, -score)
    return tree


@torch.no_grad()
def grow_tree_by_levels(draft, input_ids: torch.Tensor, budget: int, *, top_k: int = 4, width: int | None = None,
                        depth: int = DEFAULT_LEVELS, past_key_values=None) -> TokenTree:
    """A dynamic tree grown a level at a time (EAGLE-2's way): the draft's pass over the prefix gives the root's
    ``top_k`` children as candidates; at each level the ``width`` candidates of that level with the highest path log q
    are expanded together, in **one** draft pass over them (a tree mask, on top of the cached prefix and the levels
    before), each giving its ``top_k`` children as the next level's candidates. After ``depth`` levels the ``budget``
    candidates with the highest path log q form the tree (a child's path is never likelier than its parent's, so every
    chosen node's parent is chosen too). Draft passes: ``depth``, whatever the budget.

    The draft's cache (``past_key_values``) must hold at most the prefix; it is left holding exactly the prefix."""
    check_level_options(budget, top_k, depth)
    n = input_ids.shape[1]
    if past_key_values is None:
        root = draft(input_ids, use_cache=False).logits[0, -1]
    else:
        rollback(past_key_values, min(cache_length(past_key_values), n - 1))
        root = draft(input_ids[:, cache_length(past_key_values):], past_key_values=past_key_values,
                     use_cache=True).logits[0, -1]
    tree = grow_levels(torch.log_softmax(root.float(), dim=-1),
                       lambda expanded, fresh: torch.log_softmax(
                           _node_logits(draft, input_ids, expanded, fresh, past_key_values).float(), dim=-1),
                       budget, top_k=top_k, width=width, depth=depth)
    if past_key_values is not None:
        rollback(past_key_values, n)
    return tree


def check_level_options(budget: int, top_k: int, depth: int) -> None:
    if budget < 1 or depth < 1 or top_k < 1:
        raise ValueError(f"budget, depth and top_k must be at least 1, got {budget}, {depth}, {top_k}")


def grow_levels(root_log_q: torch.Tensor, expand, budget: int, *, top_k: int = 4, width: int | None = None,
                depth: int = DEFAULT_LEVELS) -> TokenTree:
    """The level-at-a-time growth of ``grow_tree_by_levels`` for any drafter: ``root_log_q`` (vocab,) is log q of the
    first token; ``expand(expanded, fresh)`` returns log q after each node ``fresh`` of the tree ``expanded`` (the
    candidates read so far, in the order read), one row each, from one pass of the drafter over them."""
    check_level_options(budget, top_k, depth)
    width = width or top_k
    # every candidate: (path log q, depth, its index, parent's candidate index (−1: root), token)
    candidates: list[tuple[float, int, int, int, int]] = []
    values, tokens = root_log_q.topk(top_k)
    level = []
    for value, token in zip(values.tolist(), tokens.tolist()):
        candidates.append((value, 1, len(candidates), -1, token))
        level.append(candidates[-1])
    expanded = TokenTree()   # the candidates the draft has read, in the order its cache holds them
    where = {}               # candidate index -> node index in ``expanded``
    for d in range(1, depth):
        chosen = sorted(level, key=lambda c: -c[0])[:width]
        first = len(expanded)
        for value, _, index, parent, token in chosen:
            where[index] = expanded.add(token, where.get(parent, -1), value)
        fresh = list(range(first, len(expanded)))
        log_q = expand(expanded, fresh)
        level = []
        for row in range(len(fresh)):
            index = chosen[row][2]
            values, tokens = log_q[row].topk(top_k)
            for value, token in zip(values.tolist(), tokens.tolist()):
                candidates.append((chosen[row][0] + value, d + 1, len(candidates), index, token))
                level.append(candidates[-1])
    kept = sorted(candidates, key=lambda c: (-c[0], c[1], c[2]))[:budget]
    kept_set = {c[2] for c in kept}
    tree, node_of = TokenTree(), {}
    for value, _, index, parent, token in sorted(kept, key=lambda c: (c[1], -c[0], c[2])):  # parents before children
        if parent != -1 and parent not in kept_set:  # (only a tie in log q could leave a parent out)
            continue
        node_of[index] = tree.add(token, node_of.get(parent, -1), value)
    return tree


def _node_logits(model, input_ids: torch.Tensor, tree: TokenTree, fresh: list[int], past_key_values) -> torch.Tensor:
    """The model's logits (len(fresh), vocab) at the tree nodes ``fresh`` (the last ones added), from one pass over them;
    the cache, when given, holds the prefix and the nodes before them (in node order) and then holds them too. Without a
    cache the prefix and every node are fed (the same numbers, computed again)."""
    n = input_ids.shape[1]
    if past_key_values is None:
        logits = tree_logits(model, input_ids, tree)
        return logits[[i + 1 for i in fresh]]
    seen = cache_length(past_key_values)
    if seen != n + fresh[0]:
        raise ValueError(f"the cache should hold the {n}-token prefix and {fresh[0]} nodes, it holds {seen} positions")
    fed = torch.tensor([[tree.tokens[i] for i in fresh]], dtype=torch.long, device=input_ids.device)
    allowed = _fit_to_cache(tree_mask(tree.parents, n)[fresh], past_key_values, n + len(tree))
    additive = _additive(allowed, getattr(model, "dtype", torch.float32))[None, None].to(input_ids.device)
    positions = tree_positions(tree.parents, n)[fresh].view(1, -1).to(input_ids.device)
    out = model(fed, attention_mask=additive, position_ids=positions, past_key_values=past_key_values, use_cache=True)
    return out.logits[0]


def static_tree(shape) -> list[int]:
    """The parents of a fixed tree shape: ``shape[d]`` = how many children each depth-d node on the main line gets
    (the main line is every level's first child). E.g. (3, 2, 1): 3 guesses for the next token, 2 for the one after the
    first guess, 1 after that."""
    parents, main = [], -1
    for width in shape:
        first = len(parents)
        parents += [main] * width
        main = first
    return parents


@torch.no_grad()
def fill_static_tree(draft, input_ids: torch.Tensor, shape, *, past_key_values=None) -> TokenTree:
    """The static tree ``shape`` filled with the draft's top choices: each main-line node's children are the draft's
    top ``shape[d]`` tokens after the main line so far (one draft pass per level)."""
    tree = TokenTree()
    parents = static_tree(shape)
    main, main_tokens = -1, []
    n = input_ids.shape[1]
    if past_key_values is not None:  # the prefix's last token is read again for its logits
        rollback(past_key_values, min(cache_length(past_key_values), n - 1))
    for width in shape:
        sequence = torch.cat([input_ids, torch.tensor([main_tokens], dtype=torch.long, device=input_ids.device).view(1, -1)], 1)
        if past_key_values is None:
            logits = draft(sequence, use_cache=False).logits[0, -1]
        else:  # only what the cache has not seen: the prefix's tail, then each main-line token once
            logits = draft(sequence[:, cache_length(past_key_values):], past_key_values=past_key_values,
                           use_cache=True).logits[0, -1]
        log_q = torch.log_softmax(logits.float(), dim=-1)
        base = tree.log_q[main] if main != -1 else 0.0
        values, tokens = log_q.topk(width)
        first = len(tree)
        for value, token in zip(values.tolist(), tokens.tolist()):
            tree.add(token, main, base + value)
        main, main_tokens = first, main_tokens + [tree.tokens[first]]
    if past_key_values is not None:
        rollback(past_key_values, min(cache_length(past_key_values), n))
    assert tree.parents == parents
    return tree


def accept_greedy(tree: TokenTree, logits: torch.Tensor) -> tuple[list[int], int]:
    """(accepted node indices root → down, the target's token after them): from the root, move into the child whose
    token is the target's argmax at the current node; stop where none is. ``logits``: (1 + m, vocab) from ``tree_logits``."""
    path, node = [], -1
    while True:
        best = int(torch.argmax(logits[node + 1]))
        match = [c for c in tree.children(node) if tree.tokens[c] == best]
        if not match:
            return path, best
        node = match[0]
        path.append(node)


def accept_sampling(tree: TokenTree, probs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[list[int], int]:
    """(accepted nodes, the next token) with the output distributed as the target's: at each node its children, distinct
    fixed guesses, are tried in turn; guess g is accepted with probability p(g) / (mass of p not yet refused); a refused
    guess leaves the distribution; when all are refused, the token is drawn from what remains of p.
    ``probs``: (1 + m, vocab), the target's distributions at the root and at each node."""
    path, node = [], -1
    while True:
        p = probs[node + 1].clone().float()
        moved = False
        for child in tree.children(node):
            g = tree.tokens[child]
            remaining = float(p.sum())
            if remaining <= 0:
                break
            if float(torch.rand((), generator=generator)) * remaining < float(p[g]):
                node = child
                path.append(child)
                moved = True
                break
            p[g] = 0.0  # refused: the next guess and the final draw come from p without it
        if not moved:
            if float(p.sum()) <= 0:  # every token with mass was offered and refused (cannot happen for a true p)
                p = probs[node + 1].clone().float()
            return path, int(torch.multinomial(p / p.sum(), 1, generator=generator))


def expected_accepted_length(tree: TokenTree, alpha_of_rank=None) -> float:
    """E[accepted nodes] of a tree if the draft's path probabilities were the target's: Σ over nodes of
    exp(log q of its path) (each node is accepted exactly when its whole path is the target's continuation).
    With ``alpha_of_rank``: a node that is the r-th child (0 = first) is right with probability alpha_of_rank[r] given
    its parent was, instead of q."""
    if alpha_of_rank is None:
        return sum(math.exp(v) for v in tree.log_q)
    total, chance = 0.0, {}
    for i, parent in enumerate(tree.parents):
        rank = tree.children(parent).index(i)
        prior = 1.0 if parent == -1 else chance[parent]
        chance[i] = prior * (alpha_of_rank[rank] if rank < len(alpha_of_rank) else 0.0)
        total += chance[i]
    return total


@dataclass
class TreeStep:
    tree: TokenTree
    accepted: list[int]   # node indices of the accepted path
    token: int            # the target's own token after it (correction or bonus)
    draft_time: float
    verify_time: float


@dataclass
class TreeResult:
    tokens: list[int]
    steps: list[TreeStep]
    seconds: float

    @property
    def target_passes(self) -> int:
        return len(self.steps)

    @property
    def tokens_per_pass(self) -> float:
        return len(self.tokens) / max(len(self.steps), 1)


@torch.no_grad()
def tree_generate(target, draft, input_ids, max_new_tokens: int, *, budget: int = 8, top_k: int = 4, shape=None,
                  levels: int | None = None, temperature: float = 0.0, eos_token_id=None, use_cache: bool = True,
                  cache_kind: str = "dynamic", seed: int | None = None,
                  generator: torch.Generator | None = None) -> TreeResult:
    """Speculative decoding with token trees: the draft grows a tree (dynamic, ``budget`` nodes, best-first by path
    probability, one draft pass per node; with ``levels``, a level at a time in that many draft passes,
    ``grow_tree_by_levels``; or the fixed ``shape``), the target scores every node in one pass, the longest path it accepts is kept,
    then its own token after that path. Temperature 0: exactly the target's greedy output; > 0: sampled, distributed as
    the target's (see ``accept_sampling``)."""
    from .cache import new_cache
    from .drafters.base import Drafter
    from .generation import as_input_ids, check_max_new_tokens, make_generator, sync
    from .perf import clock

    ids = as_input_ids(input_ids, target)
    check_max_new_tokens(max_new_tokens)
    if shape is None and budget < 1:
        raise ValueError(f"budget (nodes per tree) must be at least 1, got {budget}")
    if levels is not None and levels < 1:
        raise ValueError(f"levels (draft passes per tree) must be at least 1, got {levels}")
    if shape is not None and (not shape or any(int(w) < 1 for w in shape)):
        raise ValueError(f"shape gives each level's number of children, each at least 1; got {shape!r}")
    if temperature > 0 and generator is None:
        generator = make_generator(seed)
    nodes = sum(shape) if shape is not None else budget
    if getattr(draft, "grows_by_levels", False) and levels is None:
        levels = DEFAULT_LEVELS
    if levels is not None:  # the draft's cache holds every expanded candidate while the tree grows
        nodes = max(nodes, (levels - 1) * top_k)
    capacity = ids.shape[1] + max_new_tokens + nodes + 2
    target_cache = new_cache(target, cache_kind, capacity) if use_cache else None
    proposes_trees = hasattr(draft, "propose_tree")  # a drafter with trees of its own (prompt lookup, the feature head)
    by_levels = getattr(draft, "grows_by_levels", False)
    if proposes_trees and (shape is not None or (levels is not None and not by_levels)):
        raise ValueError(f"{getattr(draft, 'name', 'this drafter')} proposes trees of its own: give a budget (nodes per "
                         "tree)" + (" and levels, not a shape" if by_levels else ", not a shape or levels"))
    draft_cache = new_cache(draft, cache_kind, capacity) if use_cache and not proposes_trees else None
    if isinstance(draft, Drafter):
        draft.start(ids, max_length=capacity, use_cache=use_cache, cache_kind=cache_kind)
    wants_features = getattr(draft, "wants_features", False)  # handed the target's features of the kept positions
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
    tokens: list[int] = []
    steps: list[TreeStep] = []
    started = clock.now()
    while len(tokens) < max_new_tokens and not (tokens and tokens[-1] in eos):
        sequence = torch.cat([ids, torch.tensor([tokens], dtype=torch.long, device=ids.device).view(1, -1)], dim=1)
        n = sequence.shape[1]
        # 1. the draft proposes a tree of guesses
        start = clock.now()
        if proposes_trees:
            tree = draft.propose_tree(sequence, budget, **({"top_k": top_k, "levels": levels} if by_levels else {}))
        elif shape is not None:
            tree = fill_static_tree(draft, sequence, shape, past_key_values=draft_cache)
        elif levels is not None:
            tree = grow_tree_by_levels(draft, sequence, budget, top_k=top_k, depth=levels, past_key_values=draft_cache)
        else:
            tree = grow_tree(draft, sequence, budget, top_k=top_k, past_key_values=draft_cache)
        sync(ids.device)
        draft_time = clock.now() - start
        # 2. the target scores every node in one pass
        start = clock.now()
        read = []
        logits = tree_logits(target, sequence, tree, past_key_values=target_cache,
                             on_features=(lambda rows, first_position: read.append((rows, first_position)))
                             if wants_features else None)
        # 3. the longest path it accepts, and 4. its own token after that path
        if temperature > 0:
            path, token = accept_sampling(tree, torch.softmax(logits.float() / temperature, dim=-1), generator)
        else:
            path, token = accept_greedy(tree, logits)
        compact_cache(target_cache, n, path)
        if wants_features:  # the features of the prefix's new rows and of the accepted path, in sequence order
            rows, first = read[0]
            draft.observe_features(torch.cat([rows[:n - first], rows[n - first:][path]]), first)
        if isinstance(draft, Drafter):
            draft.rollback(n + len(path))
        sync(ids.device)
        verify_time = clock.now() - start
        steps.append(TreeStep(tree, path, token, draft_time, verify_time))
        for new in [tree.tokens[i] for i in path] + [token]:
            if len(tokens) < max_new_tokens and not (tokens and tokens[-1] in eos):
                tokens.append(new)
    return TreeResult(tokens, steps, clock.now() - started)
