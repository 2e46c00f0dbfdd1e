import specdec_course as sc
from specdec_course.course.viz import COLOURS, step_html, trace_html
from helpers import tiny_pair
import torch


def test_step_html_colours_each_kind_of_token():
    target, draft = tiny_pair(0, noise=0.3)
    result = sc.speculative_generate(target, draft, torch.tensor([[3, 4, 5]]), 30, tau=4, rule="textbook", seed=0)
    rejected = next(s for s in result.steps if s.n_accepted < s.tau)
    html = step_html(rejected)
    assert html.count(COLOURS["accepted"]) == rejected.n_accepted
    assert html.count(COLOURS["rejected"]) == 1 and COLOURS["correction"] in html
    assert f"{rejected.n_accepted} of {rejected.tau} drafts accepted" in html and "r=" in html
    full = trace_html(result)
    assert full.count("drafts accepted") == len(result.steps)
    bonus = [s for s in result.steps if s.bonus]
    if bonus:
        assert COLOURS["bonus"] in step_html(bonus[0])


def test_figures_draw_one_box_per_token_in_the_right_colours():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_hex
    from matplotlib.patches import FancyBboxPatch

    from specdec_course.course.viz import plot_cycle, plot_drafting, plot_verification

    def boxes(ax):
        return [to_hex(p.get_facecolor()) for p in ax.patches if isinstance(p, FancyBboxPatch)]

    target, draft = tiny_pair(0, noise=0.3)
    prompt = torch.tensor([[3, 4, 5]])
    proposal = sc.draft_tokens(draft, prompt, 4)
    ax = plot_drafting(None, prompt[0].tolist(), proposal.tokens)
    assert len(boxes(ax)) == sum(3 + t for t in range(4)) + 4      # context per row, then the proposed token
    p = sc.verify(target, prompt, proposal.tokens)
    ax = plot_verification(None, 5, proposal.tokens, p)
    tops = boxes(ax)[1::2]                                         # input box, then output box, per position
    matches = [int(p[t].argmax()) == proposal.tokens[t] for t in range(4)] + [None]
    miss = matches.index(False) if False in matches else None
    for t, colour in enumerate(tops):                              # green, the first red, then moot rows grey
        expected = ("#e6e6e6" if miss is not None and t > miss else
                    "#e2c5f7" if t == 4 else "#c8f7c5" if matches[t] else "#f7c5c5")
        assert colour == expected, (t, colour, matches)
    assert miss is not None and miss < 3, "the test means something only with moot rows after a rejection"
    result = sc.speculative_generate(target, draft, prompt, 30, tau=4, seed=0)
    step = next(s for s in result.steps if s.n_accepted < s.tau)
    colours = boxes(plot_cycle(step, None, prompt[0].tolist()))
    assert colours.count(COLOURS["accepted"]) == 2 * step.n_accepted   # verdict lane and sequence lane
    assert colours.count(COLOURS["rejected"]) == 1 and colours.count(COLOURS["correction"]) == 1


def test_plot_tree_colours_the_accepted_path_and_adds_the_targets_token():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from specdec_course.course.viz import COLOURS, plot_tree
    from specdec_course.tree import TokenTree

    tree = TokenTree()
    for token, parent in ((10, -1), (11, -1), (12, 1), (13, 1), (14, 3)):
        tree.add(token, parent)
    argmax = [11, 0, 13, 1, 14, 99]          # root → node 1 → node 3 → node 4, then the target's 99
    ax = plot_tree(tree, None, [1, 3, 4], argmax)
    faces = [mcolors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert faces.count(COLOURS["accepted"]) == 3 and faces.count(COLOURS["correction"]) == 1
    texts = [t.get_text() for t in ax.texts]
    assert {"10", "11", "12", "13", "14", "99", "root"} <= set(texts)
    assert "target: 99" in texts  # the target's argmax is written under the node where it was computed
    boxes = {t.get_text(): t.get_position() for t in ax.texts if t.get_text() in {"11", "12", "13", "14", "99"}}
    assert boxes["11"][0] < boxes["13"][0] < boxes["14"][0] < boxes["99"][0]  # deeper nodes further right
    assert boxes["12"][0] == boxes["13"][0] and boxes["12"][1] != boxes["13"][1]  # siblings share a column
    plt.close("all")


def test_plot_tree_mask_draws_the_tree_mask():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specdec_course.course.viz import plot_tree_mask
    from specdec_course.tree import TokenTree, tree_mask

    tree = TokenTree()
    for token, parent in ((10, -1), (11, -1), (12, 0), (13, 2)):
        tree.add(token, parent)
    ax = plot_tree_mask(tree, 3)
    shown = ax.images[0].get_array()
    assert (shown == tree_mask(tree.parents, 3).float().numpy()).all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0: 10", "1: 11", "2: 12", "3: 13"]
    plt.close("all")


def test_the_step_viewer_shows_each_tree_step_with_its_accepted_path():
    from specdec_course.course.viz import tree_step_html, trace_html
    from specdec_course.tree import tree_generate

    target, draft = tiny_pair(1, noise=0.3)
    result = tree_generate(target, draft, torch.tensor([[3, 4, 5]]), 24, budget=5, top_k=2)
    assert result.tokens == sc.autoregressive_generate(target, torch.tensor([[3, 4, 5]]), 24).tokens
    for number, step in enumerate(result.steps):
        page = tree_step_html(step, None, number)
        assert page.count(COLOURS["accepted"]) == len(step.accepted)
        assert page.count(COLOURS["unused"]) == len(step.tree) - len(step.accepted)
        assert f"{len(step.accepted)} of {len(step.tree)} tree nodes" in page and "q(path)=" in page
        leaf = step.accepted and not step.tree.children(step.accepted[-1])
        assert (COLOURS["bonus"] in page) == bool(leaf) and (COLOURS["correction"] in page) == (not leaf)
    assert any(step.accepted for step in result.steps), "the tiny pair should accept something"
    assert trace_html(result).count("tree nodes on the accepted path") == len(result.steps)


def test_plot_tree_rows_places_each_configuration_at_its_tokens_per_pass_and_speedup():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specdec_course.course.viz import plot_tree_rows

    rows = [{"kind": "target", "setting": None, "ratio": 1.0, "tokens_per_pass": 1.0},
            {"kind": "chain", "setting": 2, "ratio": 0.9, "tokens_per_pass": 1.3, "predicted": 0.95},
            {"kind": "tree", "setting": 8, "ratio": 0.7, "tokens_per_pass": 1.7, "predicted": 0.8},
            {"kind": "levels", "setting": [8, 3], "ratio": 0.88, "tokens_per_pass": 1.72, "predicted": 1.0},
            {"kind": "static", "setting": [4, 2, 1, 1], "ratio": 0.97, "tokens_per_pass": 1.65, "predicted": 0.93}]
    ax = plot_tree_rows({"rows": rows})
    points = {tuple(line.get_xydata()[0]) for line in ax.lines if len(line.get_xydata()) == 1}
    for r in rows[1:]:
        assert (r["tokens_per_pass"], r["ratio"]) in points and (r["tokens_per_pass"], r["predicted"]) in points
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["chain, τ = 2", "8 nodes", "8 nodes by levels", "4-2-1-1"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "chains", "dynamic trees, a draft pass per node", "dynamic trees by levels", "static trees"]
    plt.close("all")
