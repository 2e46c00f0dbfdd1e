"""Pictures of speculative decoding steps: accepted, rejected and correction tokens, and a step viewer.

``step_viewer(result, tokenizer)`` shows one step at a time with a slider (ipywidgets); where no widget
front end is attached it falls back to a static HTML table of every step.
"""
from __future__ import annotations

import html

COLOURS = {"accepted": "#c8f7c5", "rejected": "#f7c5c5", "unused": "#e6e6e6", "correction": "#c5d8f7", "bonus": "#e2c5f7"}


def _decoded(tokenizer, token: int) -> str:
    return tokenizer.decode([token]) if tokenizer is not None else str(token)


def _piece(tokenizer, token: int) -> str:
    return html.escape(_decoded(tokenizer, token).replace("\n", "⏎")) or "&nbsp;"


def _chip(label: str, kind: str, under: str = "") -> str:
    return (f"<span style='display:inline-block;margin:2px;padding:2px 5px;border-radius:4px;background:{COLOURS[kind]};"
            f"font-family:monospace;text-align:center;vertical-align:top'>{label}"
            f"<br><span style='font-size:70%;color:#444'>{under}</span></span>")


def step_html(step, tokenizer=None, number: int | None = None) -> str:
    """One step as coloured chips: accepted drafts (green), the first rejection (red), drafts after it (grey),
    and the target's correction (blue) or bonus token (purple), with p and q under each draft."""
    chips = []
    for t, token in enumerate(step.draft_tokens):
        if t < step.n_accepted:
            kind = "accepted"
        elif t == step.n_accepted:
            kind = "rejected"
        else:
            kind = "unused"
        r = f" r={step.r[t]:.2f}" if step.r is not None else ""
        chips.append(_chip(_piece(tokenizer, token), kind, f"p={step.p[t]:.2f} q={step.q[t]:.2f}{r}"))
    chips.append(_chip(_piece(tokenizer, step.correction), "bonus" if step.bonus else "correction",
                       "bonus" if step.bonus else "correction"))
    title = f"step {number}: " if number is not None else ""
    return (f"<div style='margin:4px 0'><b>{title}</b>{step.n_accepted} of {step.tau} drafts accepted, "
            f"{len(step.emitted)} tokens added<br>{''.join(chips)}</div>")


def tree_step_html(step, tokenizer=None, number: int | None = None) -> str:
    """One token-tree step (a ``TreeStep``): the tree drawn as an indented outline, a node per line under its parent,
    the accepted path green and the other nodes grey, with the draft's path probability q under each; then the
    target's own token after the path (a bonus when the path ended at a leaf, else a correction)."""
    import math

    tree, accepted = step.tree, set(step.accepted)
    lines = []

    def visit(node, depth):
        for child in tree.children(node):
            kind = "accepted" if child in accepted else "unused"
            lines.append(f"<div style='margin-left:{1.5 * depth:.1f}em;line-height:1.1'>└ "
                         + _chip(_piece(tokenizer, tree.tokens[child]), kind, f"q(path)={math.exp(tree.log_q[child]):.2f}")
                         + "</div>")
            visit(child, depth + 1)

    visit(-1, 0)
    last = step.accepted[-1] if step.accepted else -1
    bonus = bool(step.accepted) and not tree.children(last)
    tail = _chip(_piece(tokenizer, step.token), "bonus" if bonus else "correction", "bonus" if bonus else "correction")
    title = f"step {number}: " if number is not None else ""
    return (f"<div style='margin:4px 0'><b>{title}</b>{len(step.accepted)} of {len(tree)} tree nodes on the accepted "
            f"path, {len(step.accepted) + 1} tokens added<br>{''.join(lines)}<div>then the target's own token: {tail}"
            "</div></div>")


def _emitted(step) -> list[int]:
    """The tokens a step added: a chain step's ``emitted``, or a tree step's accepted path and the target's token."""
    if hasattr(step, "tree"):
        return [step.tree.tokens[i] for i in step.accepted] + [step.token]
    return list(step.emitted)


def _html(step, tokenizer, number):
    return (tree_step_html if hasattr(step, "tree") else step_html)(step, tokenizer, number)


def legend_html() -> str:
    return " ".join(_chip(k, k) for k in ("accepted", "rejected", "unused", "correction", "bonus"))


def trace_html(result, tokenizer=None, limit: int | None = None) -> str:
    steps = result.steps if limit is None else result.steps[:limit]
    return legend_html() + "".join(_html(s, tokenizer, i) for i, s in enumerate(steps))


def step_viewer(result, tokenizer=None):
    """A slider over the steps of a SpecResult (chains) or a TreeResult (token trees, each step's tree with its accepted
    path); static HTML where widgets cannot be shown."""
    from IPython.display import HTML, display

    tokenizer = tokenizer if tokenizer is not None else None
    static = trace_html(result, tokenizer, limit=40)
    try:
        import ipywidgets as w

        slider = w.IntSlider(min=0, max=max(len(result.steps) - 1, 0), description="step")
        view = w.HTML()

        def show(change=None):
            step = result.steps[slider.value]
            before = [tok for s in result.steps[: slider.value] for tok in _emitted(s)]
            context = tokenizer.decode(before[-30:]) if tokenizer is not None else str(before[-10:])
            view.value = (legend_html() + f"<div style='color:#555;font-family:monospace'>…{html.escape(context)}</div>"
                          + _html(step, tokenizer, slider.value))

        slider.observe(show, names="value")
        show()
        box = w.VBox([slider, view])
        bundle = dict(box._repr_mimebundle_())
    except Exception:
        display(HTML(static))
        return
    bundle["text/html"] = static
    bundle["text/plain"] = f"step viewer over {len(result.steps)} steps (widgets not available here)"
    display(bundle, raw=True)


def plot_speedup(report: dict, ax=None, title: str | None = None):
    """Measured and predicted speedup against τ, from one ``run_benchmark`` report (or one block of ``bench``'s):
    our loop for each cache kind, the cost model's predictions, and transformers' assisted generation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    rows = [r for r in report["rows"] if r["tau"] is not None]
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if "no cache" not in c]
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        style = "s--" if config.startswith("assisted") else "o-"
        ax.plot([r["tau"] for r in mine], [r["ratio"] for r in mine], style, label=f"measured: {config}")
    predicted = {}
    for r in rows:
        if "predicted" in r:
            predicted.setdefault(r["tau"], (r["predicted"], r.get("predicted_replay")))
    if predicted:
        taus = sorted(predicted)
        ax.plot(taus, [predicted[t][0] for t in taus], "k:", label="predicted (independent positions)")
        if all(predicted[t][1] is not None for t in taus):
            ax.plot(taus, [predicted[t][1] for t in taus], "k-.", label="predicted (agreement replayed)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("τ (draft tokens per step)")
    ax.set_ylabel("speedup over target-only")
    ax.set_title(title or "measured and predicted speedup")
    ax.legend(fontsize=7)
    return ax


def plot_drafters(report: dict, ax=None, title: str | None = None):
    """Measured (solid) and predicted (dotted) speedup against τ for each drafter of a ``drafter_benchmark`` report,
    transformers' prompt lookup and assisted generation dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.0))
    rows = [r for r in report["rows"] if r["tau"] is not None]
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        outside = config.startswith("transformers")
        line, = ax.plot([r["tau"] for r in mine], [r["ratio"] for r in mine], "s--" if outside else "o-", label=config)
        if not outside and all("predicted" in r for r in mine):
            ax.plot([r["tau"] for r in mine], [r["predicted"] for r in mine], ":", color=line.get_color())
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("τ (draft tokens per step)")
    ax.set_ylabel("speedup over target-only")
    ax.set_title(title or "drafters side by side (dotted: predicted)")
    ax.legend(fontsize=7)
    return ax


def plot_tree_rows(report: dict, ax=None, title: str | None = None):
    """Chains against trees (a ``tree_benchmark`` report): each configuration at (tokens per target pass, measured
    speedup), its predicted speedup an open marker above or below it; chains, dynamic trees (a node at a time or by
    levels) and static trees in their own colours."""
    import matplotlib.pyplot as plt

    from ..perf.trees import row_name

    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.0))
    colours = {"chain": "#4c72b0", "tree": "#dd8452", "levels": "#55a868", "static": "#c44e52"}
    names = {"chain": "chains", "tree": "dynamic trees, a draft pass per node", "levels": "dynamic trees by levels",
             "static": "static trees"}
    for kind, colour in colours.items():
        rows = [r for r in report["rows"] if r["kind"] == kind]
        if not rows:
            continue
        ax.plot([r["tokens_per_pass"] for r in rows], [r["ratio"] for r in rows], "o", color=colour, label=names[kind])
        for r in rows:
            ax.plot([r["tokens_per_pass"]] * 2, [r["ratio"], r["predicted"]], ":", color=colour, lw=0.8)
            ax.plot(r["tokens_per_pass"], r["predicted"], "o", mfc="none", color=colour, ms=5)
            ax.annotate(row_name(r).replace("dynamic tree, ", "").replace("static tree ", ""),
                        (r["tokens_per_pass"], r["ratio"]), xytext=(4, -9), textcoords="offset points", fontsize=6.5)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("tokens per target pass")
    ax.set_ylabel("speedup over target-only")
    ax.set_title(title or "chains and trees (open markers: predicted)", fontsize=9)
    ax.legend(fontsize=7)
    return ax


# ---- figures for notebooks 01, 02 and 04: boxes of real tokens, drawn with matplotlib

def _label(tokenizer, token: int) -> str:
    text = _decoded(tokenizer, token).replace("\n", "\\n").replace("$", r"\$")
    return text if text.strip() else repr(text)


def _box(ax, x, y, text, colour, *, width=0.9, height=0.6, bold=False, under=None):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                facecolor=colour, edgecolor="#555", lw=0.6))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, family="monospace", weight="bold" if bold else "normal")
    if under:
        ax.text(x, y - height / 2 - 0.12, under, ha="center", va="top", fontsize=6.5, color="#333")


def _canvas(ax, width, height):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.15 * width + 1, 13), 0.62 * height + 0.6))
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-0.6, height)
    ax.axis("off")
    return ax


def plot_drafting(tokenizer, prefix_ids, draft_ids, ax=None, context_shown: int = 3):
    """What each draft token is conditioned on: row t shows the end of the prefix (grey), the draft tokens before
    it (orange) and, after the arrow, the token ŷ_t it proposes."""
    prefix_ids = [int(t) for t in prefix_ids][-context_shown:]
    tau = len(draft_ids)
    width = context_shown + tau + 2
    ax = _canvas(ax, width, tau + 0.2)
    for t in range(1, tau + 1):
        y = tau - t + 0.5
        ax.text(-0.6, y, f"t={t}", ha="right", va="center", fontsize=8)
        ax.text(0, y, "…", ha="center", va="center", fontsize=10)
        for i, token in enumerate(prefix_ids):
            _box(ax, 1 + i, y, _label(tokenizer, token), "#e6e6e6")
        for i, token in enumerate(draft_ids[: t - 1]):
            _box(ax, 1 + len(prefix_ids) + i, y, _label(tokenizer, token), "#fbd9a5")
        x = 1 + len(prefix_ids) + t - 1
        ax.annotate("", xy=(x + 0.55, y), xytext=(x - 0.45, y), arrowprops=dict(arrowstyle="->", color="#333"))
        _box(ax, x + 1.1, y, _label(tokenizer, draft_ids[t - 1]), "#f5a623", bold=True)
    ax.set_title("each draft token ŷ_t is conditioned on the prefix (grey) and the draft tokens before it (orange)",
                 fontsize=9)
    return ax


def plot_verification(tokenizer, last_prefix_id: int, draft_ids, p, ax=None):
    """One target pass: inputs (the last prefix token and the τ drafts) below, the τ + 1 distributions it returns
    above. Box t shows the target's argmax in row t of p and the probability p gives the draft token there:
    green where the draft token is the argmax, red at the first draft that is not (greedy verification stops there);
    rows after it are moot (grey): they are conditioned on a rejected draft. The last row is the bonus position."""
    tau = len(draft_ids)
    ax = _canvas(ax, tau + 2, 3.8)
    inputs = [int(last_prefix_id)] + [int(t) for t in draft_ids]
    first_miss = next((i for i in range(tau) if int(p[i].argmax()) != int(draft_ids[i])), None)
    for i, token in enumerate(inputs):
        _box(ax, i, 0.5, _label(tokenizer, token), "#e6e6e6" if i == 0 else "#fbd9a5")
        best = int(p[i].argmax())
        if first_miss is not None and i > first_miss:
            colour, under = "#e6e6e6", "moot: after\na rejection"
        elif i < tau:
            good = best == int(draft_ids[i])
            colour, under = ("#c8f7c5" if good else "#f7c5c5"), f"p(ŷ_{i + 1}) = {float(p[i, draft_ids[i]]):.2f}"
        else:
            colour, under = "#e2c5f7", "bonus position"
        ax.annotate("", xy=(i, 2.15), xytext=(i, 0.85), arrowprops=dict(arrowstyle="->", color="#888"))
        _box(ax, i, 2.5, _label(tokenizer, best), colour)
        ax.text(i, 2.9, f"row {i}\n{under}", ha="center", va="bottom", fontsize=6.5, color="#333")
    ax.text(tau + 0.9, 0.5, "input: one pass\nover τ + 1 tokens", fontsize=7.5, va="center")
    ax.text(tau + 0.9, 2.5, "output: τ + 1\ndistributions\n(argmax shown)", fontsize=7.5, va="center")
    ax.set_title("one verification pass: every row of p from a single forward pass of the target", fontsize=9)
    return ax


def plot_cycle(step, tokenizer, prefix_ids, ax=None, context_shown: int = 3):
    """One full cycle of a real step, in four lanes: the draft proposes τ tokens (with q), the target scores them in
    one pass (p), the rule keeps the consecutive accepted run, and the sequence after the step ends with the target's
    correction (or bonus) token."""
    prefix_ids = [int(t) for t in prefix_ids][-context_shown:]
    tau, n = len(step.draft_tokens), step.n_accepted
    start = len(prefix_ids) + 1
    ax = _canvas(ax, start + tau + 1.5, 4.6)
    lanes = {"1 draft": 3.9, "2 verify": 2.8, "3 accept": 1.7, "4 correct": 0.5}
    for name, y in lanes.items():
        ax.text(-0.6, y, name, ha="right", va="center", fontsize=8, weight="bold")
    for i, token in enumerate(prefix_ids):
        _box(ax, 1 + i, 0.5, _label(tokenizer, token), "#e6e6e6")
    ax.text(0, 0.5, "…", ha="center", va="center", fontsize=10)
    for t, token in enumerate(step.draft_tokens):
        x = start + t
        _box(ax, x, 3.9, _label(tokenizer, token), "#fbd9a5", under=f"q = {step.q[t]:.2f}")
        _box(ax, x, 2.8, f"p={step.p[t]:.2f}", "#ffffff")
        verdict = "A" if t < n else ("R" if t == n else "–")
        colour = COLOURS["accepted"] if t < n else (COLOURS["rejected"] if t == n else COLOURS["unused"])
        _box(ax, x, 1.7, verdict, colour, bold=True)
        if t < n:
            _box(ax, x, 0.5, _label(tokenizer, token), COLOURS["accepted"])
    kind = "bonus" if step.bonus else "correction"
    _box(ax, start + n, 0.5, _label(tokenizer, step.correction), COLOURS[kind], bold=True, under=kind)
    ax.set_title(f"one cycle: {n} of {tau} drafts accepted, then the target's {kind}: {n + 1} tokens for one target pass",
                 fontsize=9)
    return ax


# ---- notebook 09: drafters on the α-c plane

def _curve(cost_curve: dict) -> dict:
    curve = {int(k): float(v) for k, v in cost_curve.items()}
    if 1 not in curve or len(curve) < 2:
        raise ValueError("cost_curve must give T(k)/T(1) for k = 1 and at least one k > 1, e.g. {1: 1.0, 2: 1.1, ...}")
    return curve


def best_speedup(alpha: float, c: float, cost_curve: dict, taus=None) -> tuple[float, int]:
    """The cost model's best predicted speedup at one point of the α-c plane, and the τ that gives it:
    max over τ of E(α, τ) / (τ·c + T(τ+1)/T(1)), with ``cost_curve`` = {k: T(k)/T(1)} as measured (only the τ whose
    τ + 1 was measured are tried; ``taus`` restricts them further)."""
    from ..perf.analysis import expected_speedup

    curve = _curve(cost_curve)
    candidates = [t for t in (taus if taus is not None else range(1, max(curve))) if t >= 1 and t + 1 in curve]
    if not candidates:
        raise ValueError(f"no τ to try: T(τ + 1) is measured for k = {sorted(curve)} only")
    return max((expected_speedup(alpha, t, c, curve[t + 1]), t) for t in candidates)


def speedup_grid(alphas, cs, cost_curve: dict, taus=None):
    """``best_speedup`` at every point of a grid, as an array (len(alphas), len(cs)), computed for all points at once."""
    import numpy as np

    curve = _curve(cost_curve)
    candidates = [t for t in (taus if taus is not None else range(1, max(curve))) if t >= 1 and t + 1 in curve]
    if not candidates:
        raise ValueError(f"no τ to try: T(τ + 1) is measured for k = {sorted(curve)} only")
    a = np.asarray(alphas, dtype=float)[:, None]
    c = np.asarray(cs, dtype=float)[None, :]
    best = np.zeros((a.shape[0], c.shape[1]))
    for tau in candidates:
        tokens = np.where(a < 1, (1 - a ** (tau + 1)) / np.where(a < 1, 1 - a, 1.0), tau + 1.0)
        best = np.maximum(best, tokens / (tau * c + curve[tau + 1]))
    return best


def plot_alpha_c_plane(cost_curve: dict, points=(), *, ax=None, taus=None, c_max: float | None = None,
                       levels=(0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0), title: str | None = None):
    """The α-c plane: contours of the best predicted speedup over τ (``best_speedup``) for the measured cost curve
    T(k)/T(1), the region where no τ beats the target alone shaded, and each drafter placed at its measured (c, α).

    ``points``: dicts with "label", "alpha", "c" and optionally "measured" (the speedup measured for it, added to its
    label in the legend), "marker" (a matplotlib marker, "o" by default) and "hollow" (True: an open marker)."""
    import matplotlib.pyplot as plt
    import numpy as np

    curve = _curve(cost_curve)
    points = list(points)
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 4.6))
    top = c_max if c_max is not None else max([0.8] + [1.15 * float(p["c"]) for p in points])
    alphas = np.linspace(0.0, 1.0, 101)
    cs = np.linspace(0.0, top, 81)
    grid = speedup_grid(alphas, cs, curve, taus)
    ax.contourf(cs, alphas, grid, levels=[0, 1.0], colors=["#e8e8e8"])
    shown = sorted(level for level in levels if grid.min() < level < grid.max())
    lines = ax.contour(cs, alphas, grid, levels=shown, colors="#555",
                       linewidths=[1.8 if level == 1.0 else 0.8 for level in shown])
    ax.clabel(lines, fmt=lambda v: f"{v:g}x", fontsize=7)
    for index, p in enumerate(points):
        colour = f"C{index % 10}"
        text = p["label"] + (f": measured {p['measured']:.2f}x" if p.get("measured") is not None else "")
        ax.plot(float(p["c"]), float(p["alpha"]), p.get("marker", "o"), color=colour, markersize=8,
                markerfacecolor="none" if p.get("hollow") else colour, label=text)
    if points:  # a legend beside the plane: labels written next to the points would collide where points crowd
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlim(-0.02 * top, top)
    ax.set_ylim(0, 1.04)
    ax.set_xlabel("c = drafting time per drafted token / target time per token")
    ax.set_ylabel("α = acceptance rate per position")
    ax.set_title(title or "the α-c plane: predicted speedup at the best τ (grey: slower than the target alone)",
                 fontsize=9)
    return ax


def _tree_layout(parents) -> dict:
    """(depth, row) of each node of a tree (parents[i] = −1: a child of the root): depth left to right, and rows so
    that every subtree takes a band of its own, its first child on the parent's row."""
    children = {}
    for i, parent in enumerate(parents):
        children.setdefault(parent, []).append(i)
    place, next_row = {}, [0]

    def visit(node, depth):
        kids = children.get(node, [])
        if node != -1:
            place[node] = (depth, next_row[0])
        for k, kid in enumerate(kids):
            if k:
                next_row[0] += 1
            visit(kid, depth + 1)

    visit(-1, 0)
    return place


def plot_tree(tree, tokenizer=None, accepted=(), target_tokens=None, ax=None, title=None):
    """A token tree, root (the prefix's last token) on the left, one column per depth. The accepted path is green,
    the other nodes grey; ``target_tokens`` (the target's argmax at the root and at each node, 1 + m of them) are
    written under the nodes, and the target's own token after the accepted path is drawn in blue."""
    place = _tree_layout(tree.parents)
    accepted = list(accepted)
    depth = max((d for d, _ in place.values()), default=0)
    rows = max((r for _, r in place.values()), default=0) + 1
    ax = _canvas(ax, 2 * (depth + 2), 1.1 * rows + 0.5)
    ax.set_ylim(-1.1 * rows + 0.2, 1.0)
    xy = {-1: (0.0, 0.0)}
    for node, (d, r) in place.items():
        xy[node] = (2.0 * d, -1.1 * r)
    for node, parent in enumerate(tree.parents):
        (x0, y0), (x1, y1) = xy[parent], xy[node]
        on_path = node in accepted and (parent == -1 or parent in accepted)
        ax.plot([x0 + 0.45, x1 - 0.45], [y0, y1], color="#2a8a2a" if on_path else "#bbb", lw=1.6 if on_path else 0.8,
                zorder=0)
    under = (lambda i: None) if target_tokens is None else (lambda i: f"target: {_label(tokenizer, target_tokens[i + 1])}")
    _box(ax, 0.0, 0.0, "root", COLOURS["unused"], width=1.0, bold=True, under=under(-1))
    for node in range(len(tree)):
        colour = COLOURS["accepted"] if node in accepted else COLOURS["unused"]
        _box(ax, *xy[node], _label(tokenizer, tree.tokens[node]), colour, width=1.3, bold=node in accepted,
             under=under(node))
    if target_tokens is not None:
        last = accepted[-1] if accepted else -1
        x, y = xy[last]
        extra = 2.0 * (depth + 1)  # a column of its own, beyond the deepest node
        token = target_tokens[last + 1]
        ax.plot([x + 0.65, extra - 0.65], [y, y], color="#3b6fc4", lw=1.2, ls="--", zorder=0)
        _box(ax, extra, y, _label(tokenizer, token), COLOURS["correction"], width=1.3, bold=True, under="the target's")
    ax.set_xlim(-0.8, 2.0 * (depth + 1) + 1.0)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_tree_mask(tree, prefix_length: int, tokenizer=None, ax=None, prefix_labels=None):
    """The tree attention mask as a grid: a row per node, a column per prefix position and node; dark = may attend."""
    import matplotlib.pyplot as plt

    from ..tree import tree_mask

    mask = tree_mask(tree.parents, prefix_length).float().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(0.42 * mask.shape[1] + 1.8, 0.42 * mask.shape[0] + 1.2))
    ax.imshow(mask, cmap="Greens", vmin=0, vmax=1.3, aspect="equal")
    nodes = [f"{i}: {_label(tokenizer, t)}" for i, t in enumerate(tree.tokens)]
    prefix = list(prefix_labels) if prefix_labels is not None else [f"x{j}" for j in range(prefix_length)]
    ax.set_yticks(range(len(nodes)), nodes, fontsize=7, family="monospace")
    ax.set_xticks(range(mask.shape[1]), prefix + [str(i) for i in range(len(nodes))], fontsize=7, rotation=90)
    ax.axvline(prefix_length - 0.5, color="#555", lw=0.8)
    ax.set_xlabel("may attend to: prefix positions | nodes", fontsize=8)
    ax.set_ylabel("node (query)", fontsize=8)
    return ax
