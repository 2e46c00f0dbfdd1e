"""The static-cache decoder that CUDA graphs replay (``perf.graphs``), run without graphs on the CPU: its target-only
and speculative output is the target's greedy output token for token, its caches hold exactly the kept tokens, and it
refuses what it cannot do. Capturing the graphs needs CUDA: that part is checked where a GPU is present."""
import pytest
import torch

import specdec_course as sc
from specdec_course.generation import autoregressive_generate
from specdec_course.perf.graphs import StaticDecoder, set_cache_length, static_pass

from helpers import CharTokenizer, tiny_pair


def _prompt(seed, length=7, vocab=64):
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_only_and_every_tau_give_the_targets_greedy_output(seed):
    target, draft = tiny_pair(seed)
    decoder = StaticDecoder(target, draft, capacity=80, graphs=False)
    for prompt_seed in range(2):  # one decoder, reused prompt after prompt as a graphed one is
        prompt = _prompt(10 * seed + prompt_seed)
        expected = autoregressive_generate(target, prompt, 30).tokens
        tokens, passes = decoder.generate(prompt, 30)
        assert tokens == expected and passes == 30
        for tau in (1, 2, 3, 5):
            tokens, passes = decoder.generate(prompt, 30, tau=tau)
            assert tokens == expected, f"tau={tau}: {tokens} != {expected}"
            assert passes <= 30


def test_a_draft_equal_to_the_target_is_always_accepted():
    target, _ = tiny_pair(3)
    decoder = StaticDecoder(target, target, capacity=60, graphs=False)
    prompt = _prompt(5)
    tokens, passes = decoder.generate(prompt, 24, tau=3)
    assert tokens == autoregressive_generate(target, prompt, 24).tokens
    assert passes == 6  # 3 drafts + a bonus token per pass


def test_the_caches_hold_exactly_the_kept_tokens_after_a_run():
    target, draft = tiny_pair(4)
    decoder = StaticDecoder(target, draft, capacity=60, graphs=False)
    prompt = _prompt(6)
    tokens, _ = decoder.generate(prompt, 17, tau=3)
    sequence = torch.cat([prompt, torch.tensor(tokens)]).view(1, -1)
    length = int(decoder.target_cache.layers[0].cumulative_length)
    assert length == sequence.shape[1] - 1 >= 17  # all but the pending token (no overshoot beyond the last step)
    fresh = target(sequence[:, :length], use_cache=True).past_key_values
    for index in (0, len(fresh.layers) - 1):
        assert torch.allclose(decoder.target_cache.layers[index].keys[:, :, :length], fresh.layers[index].keys, atol=1e-5)


def test_a_static_pass_equals_the_plain_forward():
    target, _ = tiny_pair(5)
    decoder = StaticDecoder(target, capacity=40, graphs=False)
    ids = _prompt(7, length=12)
    set_cache_length(decoder.target_cache, 0)
    first = static_pass(target, decoder.target_cache, ids[:8], 40, start=0)
    second = static_pass(target, decoder.target_cache, ids[8:], 40)
    plain = target(ids.view(1, -1)).logits[0]
    assert torch.allclose(torch.cat([first, second]), plain, atol=1e-5)


def test_eos_stops_and_bad_arguments_are_refused():
    target, draft = tiny_pair(0)
    prompt = _prompt(1)
    expected = autoregressive_generate(target, prompt, 20).tokens
    eos = expected[5]
    decoder = StaticDecoder(target, draft, capacity=50, graphs=False)
    tokens, _ = decoder.generate(prompt, 20, tau=4, eos_token_id=eos)
    assert tokens == expected[:expected.index(eos) + 1]
    with pytest.raises(ValueError, match="cache positions"):
        decoder.generate(prompt, 45, tau=4)
    with pytest.raises(ValueError, match="draft model"):
        StaticDecoder(target, capacity=50, graphs=False).generate(prompt, 5, tau=2)
    with pytest.raises(ValueError, match="between 1 and 16"):
        decoder.generate(prompt, 5, tau=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            StaticDecoder(target, capacity=50, graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturing CUDA graphs needs a CUDA GPU (none here): the "
                    "same decoder runs without graphs in the tests above")
def test_graphed_decoding_equals_the_eager_decoder_on_cuda():
    target, draft = tiny_pair(0)
    target, draft = target.cuda(), draft.cuda()
    prompt = _prompt(2).cuda()
    eager = StaticDecoder(target, draft, capacity=80, graphs=False)
    graphed = StaticDecoder(target, draft, capacity=80, graphs=True)
    for tau in (None, 2, 4):
        assert graphed.generate(prompt, 30, tau=tau) == eager.generate(prompt, 30, tau=tau)
    assert graphed.graph_error is None and graphed.graph_count >= 4


def test_the_graphed_benchmark_table_and_its_report_on_a_cpu():
    from specdec_course.perf.graphs import format_graphed_report, graphed_benchmark

    target, draft = tiny_pair(1)
    table = graphed_benchmark(target, draft, CharTokenizer(), ["first prompt", "a second prompt", "third"],
                              max_new_tokens=12, taus=(2, 3), eager_prompts=2, progress=False)
    rows = {(r["config"], r["tau"]): r for r in table["rows"]}
    assert table["graphs_captured"] == 0 and table["graph_error"] is None  # no CUDA: the same decoder, no graphs
    assert all(r["identical"] for r in table["rows"]) and table["mismatches"] == []
    base = rows[("target only, static cache, graphed", None)]
    assert base["prompts"] == 3 and base["ratio_to_graphed_target"] == 1.0 and base["tokens_per_pass"] == 1.0
    assert rows[("speculative (draft model), graphed", 3)]["tokens_per_pass"] > 1.0
    eager = rows[("target only, static cache, eager", None)]
    assert eager["prompts"] == 2 and eager["ratio_to_graphed_target"] is None and eager["ratio_to_eager_target"] == 1.0
    text = format_graphed_report({"machine": {"gpu": "none", "torch": "t", "transformers": "x", "date": "today"},
                                  "sections": {"graphs": table}})
    assert "1.00x graphed" in text and "1.00x eager" in text and "NO" not in text
