import specdec_course as sc
from specdec_course.viz import COLOURS, step_html, trace_html
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
