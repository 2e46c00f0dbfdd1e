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
    for t, colour in enumerate(tops[:-1]):
        assert (colour == "#c8f7c5") == (int(p[t].argmax()) == proposal.tokens[t])
    assert tops[-1] == "#e2c5f7"
    result = sc.speculative_generate(target, draft, prompt, 30, tau=4, seed=0)
    step = next(s for s in result.steps if s.n_accepted < s.tau)
    colours = boxes(plot_cycle(step, None, prompt[0].tolist()))
    assert colours.count(COLOURS["accepted"]) == 2 * step.n_accepted   # verdict lane and sequence lane
    assert colours.count(COLOURS["rejected"]) == 1 and colours.count(COLOURS["correction"]) == 1
