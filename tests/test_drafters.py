"""Drafters: every one keeps the output lossless (greedy: token for token; sampling: in distribution), rolls back its
state to exactly what recomputation gives, and proposes what it should."""
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

import specdec_course as sc
from specdec_course import speculative
from specdec_course.drafters import (Drafter, Int4Linear, Int8Linear, ModelDrafter, PromptLookup, TwoLevelDrafter,
                                     as_drafter, find_continuation, quantize_, quantized_copy, quantized_self_draft)
from specdec_course.drafters.quantized import asymmetric_4bit_grid, symmetric_8bit_grid
from conftest import first_mismatch_margin
from helpers import BigramLM, noisy_copy, tiny_pair
from test_speculative import _chi_square


def _drafters(target, seed=0):
    """One of each kind for ``target`` (a tiny Llama): name → drafter."""
    draft = noisy_copy(target, 0.4, seed + 1)
    upper = noisy_copy(target, 0.2, seed + 2)
    return {
        "draft model": ModelDrafter(draft),
        "quantized int4": quantized_self_draft(target, "int4"),
        "quantized int4-exact": quantized_self_draft(target, "int4-exact"),
        "quantized int8": quantized_self_draft(target, "int8"),
        "two-level": TwoLevelDrafter(upper, draft, inner_tau=2),
        "two-level over int4": TwoLevelDrafter(quantized_copy(target, "int4"), draft, inner_tau=3),
        "prompt lookup": PromptLookup.for_model(target),
    }


REPEATING_PROMPT = [5, 9, 3, 7, 5, 9, 3, 11, 5, 9]  # repeats itself, so prompt lookup finds matches


@pytest.mark.parametrize("cache_kind", ["dynamic", "static", None])
def test_every_drafter_keeps_greedy_output_identical(cache_kind):
    target = sc.tiny_llama(1, peaked=2.0)  # (its greedy output does not fall into a loop that any drafter predicts)
    reference = sc.autoregressive_generate(target, REPEATING_PROMPT, 24).tokens
    for name, drafter in _drafters(target).items():
        for tau in (1, 3, 6):
            result = speculative.speculative_generate(target, drafter, REPEATING_PROMPT, 24, tau=tau,
                                                      use_cache=cache_kind is not None,
                                                      cache_kind=cache_kind or "dynamic", debug=True)
            position, margin = first_mismatch_margin(target, torch.tensor([REPEATING_PROMPT]), reference, result.tokens)
            assert result.tokens == reference, (f"{name}, τ = {tau}, cache {cache_kind}: first mismatch at new "
                                                f"token {position}, top-2 logit margin {margin}")


def test_the_drafters_are_not_trivially_right_or_wrong():
    """The equality above means something: each drafter has its drafts both accepted and rejected on these runs."""
    target = sc.tiny_llama(1, peaked=2.0)
    for name, drafter in _drafters(target).items():
        result = speculative.speculative_generate(target, drafter, REPEATING_PROMPT, 24, tau=3)
        accepted = sum(s.n_accepted for s in result.steps)
        assert 0 < accepted, f"{name}: no draft was ever accepted"
        if not name.startswith("quantized") and name != "two-level over int4":  # copies of the target agree nearly always
            assert accepted < result.drafted, f"{name}: every draft accepted"


def test_rollback_of_each_drafter_equals_recomputation():
    target = sc.tiny_llama(3, peaked=2.0)
    prompt = torch.tensor([REPEATING_PROMPT])
    for name, drafter in _drafters(target, 3).items():
        if drafter.state_length() is None and name == "prompt lookup":
            continue  # nothing to roll back: it reads the sequence itself
        drafter.start(prompt, max_length=64)
        first = drafter.propose(prompt, 5)
        extended = torch.cat([prompt, torch.tensor([first.tokens])], dim=1)
        drafter.rollback(prompt.shape[1] + 2)  # as if two drafts had been kept
        assert drafter.state_length() <= prompt.shape[1] + 2
        drafter.check_state(extended)  # the cached keys are those of the kept tokens (check_cache_matches)
        # and what it proposes next is what a fresh drafter proposes from the kept sequence
        kept = extended[:, :prompt.shape[1] + 3]
        again = drafter.propose(kept, 4)
        fresh = _drafters(target, 3)[name]
        fresh.start(kept, max_length=64)
        expected = fresh.propose(kept, 4)
        assert again.tokens == expected.tokens, name
        # a quantized copy computes the prompt with float weights and single tokens in 4 bits: the fresh drafter's
        # longer first pass rounds differently, by bfloat16 rounding at most
        # (a two-level drafter's q come from its upper level, which may be such a copy)
        model = getattr(drafter, "model", None) or getattr(drafter, "upper", None)
        float_from = getattr(model, "float_from", None)
        gap = (again.q - expected.q).abs().max().item()
        assert gap <= (1e-5 if float_from is None else 2e-3), f"{name}: q differ by {gap:.2e}"


def test_rollback_leaves_no_rejected_entries_in_a_two_level_drafters_caches():
    target = sc.tiny_llama(4, peaked=2.0)
    drafter = TwoLevelDrafter(noisy_copy(target, 0.2, 1), noisy_copy(target, 0.5, 2), inner_tau=3)
    result = speculative.speculative_generate(target, drafter, REPEATING_PROMPT, 30, tau=5, debug=True)
    assert drafter.upper_passes < result.drafted, "the lower level never saved the upper one a pass"
    assert any(s.n_accepted < s.tau for s in result.steps)


def test_prompt_lookup_proposes_what_followed_the_longest_most_recent_match():
    #            0  1  2  3  4  5  6  7  8  9 10
    sequence = [7, 1, 2, 3, 4, 8, 2, 3, 9, 1, 2, 3]
    # "1 2 3" (the longest n-gram ending the sequence that occurred before) was followed by 4 8 2
    assert find_continuation(sequence, 3) == [4, 8, 2]
    assert find_continuation(sequence, 2) == [4, 8]
    # with n-grams of at most 2, "2 3" matches; its most recent earlier occurrence (positions 6-7) is followed by 9 1 2
    assert find_continuation(sequence, 3, max_ngram=2) == [9, 1, 2]
    assert find_continuation(sequence, 10, max_ngram=2) == [9, 1, 2, 3]  # no further than the sequence goes
    assert find_continuation([1, 2, 3, 4], 3) == []                      # nothing repeats
    assert find_continuation([4, 5, 6, 4], 3, min_ngram=2) == []         # only a 1-gram repeats
    lookup = PromptLookup(16)
    draft = lookup.propose(torch.tensor([sequence]), 3)
    assert draft.tokens == [4, 8, 2]
    assert draft.q.shape == (3, 16) and draft.q.sum(1).tolist() == [1.0, 1.0, 1.0]
    assert draft.q_of_tokens == [1.0, 1.0, 1.0]  # one-hot: the proposal is certain


def test_prompt_lookup_without_a_match_is_a_plain_target_step():
    target = sc.tiny_llama(0, peaked=2.0)
    prompt = [1, 2, 3, 4]
    reference = sc.autoregressive_generate(target, prompt, 12).tokens
    result = speculative.speculative_generate(target, PromptLookup.for_model(target), prompt, 12, tau=4)
    assert result.tokens == reference
    assert result.steps[0].tau == 0 and result.steps[0].emitted == reference[:1]


def test_drafters_that_run_no_model_sit_on_their_targets_device():
    """A GPU target refused prompt lookup once ("the drafter on cpu"): the drafter takes the target's device."""
    target = sc.tiny_llama(0)
    assert PromptLookup.for_model(target).device == target.device
    assert PromptLookup(64, device="meta").device == torch.device("meta")
    assert PromptLookup(64).device == torch.device("cpu")


def test_bad_drafters_and_settings_are_clear_errors():
    target = sc.tiny_llama(0)
    with pytest.raises(TypeError, match="draft model .* or a Drafter"):
        speculative.speculative_generate(target, "draft", [1, 2], 4)
    with pytest.raises(ValueError, match="vocabulary of 32"):
        speculative.speculative_generate(target, PromptLookup(32), [1, 2], 4)
    with pytest.raises(ValueError, match="max_ngram"):
        PromptLookup(64, max_ngram=0)
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookup(64, max_ngram=2, min_ngram=3)
    with pytest.raises(ValueError, match="inner_tau"):
        TwoLevelDrafter(target, noisy_copy(target, 0.1), inner_tau=0)
    with pytest.raises(ValueError, match="vocabulary"):
        TwoLevelDrafter(target, sc.tiny_llama(1, vocab_size=32))
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'"):
        quantized_copy(target, "int3")

    class Silent(Drafter):
        vocab_size = 64

    with pytest.raises(NotImplementedError, match="must define propose"):
        speculative.speculative_generate(target, Silent(), [1, 2], 4)

    class Greedy(Drafter):  # proposes one token more than it was asked for
        vocab_size = 64

        def propose(self, sequence, tau, **kwargs):
            return sc.Draft(tokens=[3] * (tau + 1), q=torch.full((tau + 1, 64), 1 / 64))

    with pytest.raises(ValueError, match="asked for at most 2 tokens and returned 3"):
        speculative.speculative_generate(target, Greedy(), [1, 2], 8, tau=2)


# ---------------------------------------------------------------- the quantized copy
def _on_grid(rows, cols, eight_bit=False, seed=0):
    """A weight that lies exactly on a Q4_1 grid (or a Q8_0 grid), as a de-quantized GGUF's weights do."""
    gen = torch.Generator().manual_seed(seed)
    groups = cols // 32
    if eight_bit:
        d = (torch.rand(rows, groups, 1, generator=gen) * 0.01).half().float()
        q = torch.randint(-127, 128, (rows, groups, 32), generator=gen).float()
        q[:, :, 0] = 127  # the group's largest magnitude sets its scale
        return (d * q).reshape(rows, cols)
    d = (torch.rand(rows, groups, 1, generator=gen) * 0.02).half().float()
    m = (-torch.rand(rows, groups, 1, generator=gen) * 0.1).half().float()
    q = torch.randint(0, 16, (rows, groups, 32), generator=gen).float()
    q[:, :, 0], q[:, :, 1] = 0, 15  # the minimum and the maximum are on the grid's ends, as Q4_1 quantizes
    return (d * q + m).reshape(rows, cols)


@pytest.mark.parametrize("eight_bit", [False, True])
@pytest.mark.parametrize("rows", [16, 40])
def test_a_weight_on_the_gguf_grid_is_recovered_exactly(eight_bit, rows):
    linear = torch.nn.Linear(64, rows, bias=True)
    with torch.no_grad():
        linear.weight.copy_(_on_grid(rows, 64, eight_bit))
    quantized = Int4Linear.from_linear(linear, eight_bit=eight_bit)
    assert quantized.exact
    x = torch.randn(2, 5, 64)
    assert torch.allclose(quantized(x), linear(x), atol=1e-5), (quantized(x) - linear(x)).abs().max()
    # the recovered grid is the one the weight was made from
    q, d, *rest = (symmetric_8bit_grid if eight_bit else asymmetric_4bit_grid)(linear.weight)
    assert q.min() >= (-127 if eight_bit else 0) and q.max() <= (127 if eight_bit else 15)


def test_a_weight_off_the_grid_is_approximated_and_says_so():
    linear = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(3, 64)
    for quantized in (Int4Linear.from_linear(linear), Int8Linear(linear)):
        assert not quantized.exact
        error = (quantized(x) - linear(x)).abs().max()
        assert 0 < error < 0.2 * linear(x).abs().max()


def test_quantized_copy_leaves_the_target_alone_and_shares_its_float_tensors():
    target = sc.tiny_llama(0, peaked=2.0)
    before = {name: p.clone() for name, p in target.state_dict().items()}
    copy = quantized_copy(target, "int4")
    assert all(type(m) is not torch.nn.Linear for m in copy.modules()), "a linear layer was left in float"
    assert copy.embed is target.model.embed_tokens.weight  # shared, not duplicated
    assert all(type(m) is not Int4Linear for m in target.modules())
    assert all(torch.equal(before[name], p) for name, p in target.state_dict().items())


def test_auto_keeps_the_scheme_with_the_best_predicted_speedup(monkeypatch):
    from specdec_course.drafters import quantized

    target = sc.tiny_llama(0, peaked=2.0)
    cases = [  # one-token ms (the target's is 10) and agreement per scheme → the scheme the cost model prefers
        ({"int4": 4, "int4-exact": 12, "int8": 8}, {"int4": 0.97, "int4-exact": 1.0, "int8": 0.97}, "int4"),
        ({"int4": 4, "int4-exact": 3, "int8": 8}, {"int4": 0.97, "int4-exact": 1.0, "int8": 0.97}, "int4-exact"),
        ({"int4": 4, "int4-exact": 12, "int8": 4}, {"int4": 0.5, "int4-exact": 1.0, "int8": 0.97}, "int8"),
    ]
    for ms, alpha, expected in cases:
        monkeypatch.setattr(quantized, "one_token_ms",
                            lambda model, **kw: ms.get(getattr(model, "quantization_scheme", None), 10.0))
        monkeypatch.setattr(quantized, "agreement", lambda model, target, seq, start: alpha[model.quantization_scheme])
        model = quantized_copy(target, "auto")
        assert model.quantization_scheme == expected, model.scheme_report
        report = model.scheme_report
        assert report["target_ms"] == 10.0 and report["int4"]["c"] == pytest.approx(ms["int4"] / 10)
        best = max(quantized.SCHEMES, key=lambda name: report[name]["predicted"])
        assert best == expected


def test_the_rescored_output_layer_gives_the_exact_layers_top_logits():
    from specdec_course.drafters.quantized import RescoredHead

    linear = torch.nn.Linear(64, 200, bias=False)
    head = RescoredHead(linear, top=8)
    x = torch.randn(3, 64)
    exact, cheap = linear(x), head(x)
    top = exact.topk(3, dim=-1).indices
    assert torch.equal(cheap.argmax(-1), exact.argmax(-1))
    assert torch.allclose(cheap.gather(-1, top), exact.gather(-1, top), atol=1e-5)  # the top logits are exact
    assert not torch.allclose(cheap, exact, atol=1e-4)                              # the rest are 4-bit estimates


# ---------------------------------------------------------------- sampling with every drafter
class LinearBigramLM(torch.nn.Module):
    """A bigram model with a linear output layer (so it can be quantized): logits = W · embedding(last token)."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, 32)
        self.head = torch.nn.Linear(32, vocab, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, 32, generator=gen))
            self.head.weight.copy_(torch.randn(vocab, 32, generator=gen) * 0.3)
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=10_000, tie_word_embeddings=False)

    @property
    def device(self):
        return torch.device("cpu")

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, past_key_values=None, use_cache=False, **kwargs):
        assert past_key_values is None
        return SimpleNamespace(logits=self.head(self.embed(input_ids)))


SAMPLES = 4_000
PROMPT = [2, 0, 1, 2, 0]  # ends in 0; repeats, so prompt lookup has matches


def _bigram_target(vocab=5):
    return BigramLM(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(11)) * 1.5)


def _sampling_drafters(vocab=5):
    gen = torch.Generator().manual_seed(12)
    return {
        "prompt lookup": PromptLookup(vocab),
        "two-level": TwoLevelDrafter(BigramLM(torch.randn(vocab, vocab, generator=gen) * 1.5),
                                     BigramLM(torch.randn(vocab, vocab, generator=gen) * 1.5), inner_tau=2),
        "quantized": ModelDrafter(quantize_(LinearBigramLM(vocab, 13), "int4")),
    }


def _counts(target, drafter, n, temperature=1.0):
    return Counter(tuple(speculative.speculative_generate(target, drafter, PROMPT, 3, tau=2, rule="sampling",
                                                          temperature=temperature, seed=s, use_cache=False).tokens)
                   for s in range(n))


@pytest.mark.parametrize("name", ["prompt lookup", "two-level", "quantized"])
def test_sampling_with_each_drafter_follows_the_targets_distribution(name):
    target = _bigram_target()
    drafter = _sampling_drafters()[name]
    counts = _counts(target, drafter, SAMPLES)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, 1.0), SAMPLES)
    assert stat < critical, f"{name}: chi-square {stat:.1f} above the 0.001 critical value {critical:.1f}"
    drafted = sum(len(t) for t in counts)  # (the drafter really drafted: tested below through the negative control)
    assert drafted


@pytest.mark.parametrize("name", ["prompt lookup", "two-level"])
def test_the_distribution_test_catches_a_drafter_whose_q_is_wrong(name, monkeypatch):
    """Negative control: a drafter that reports the wrong q (uniform instead of one-hot; the lower level's rows instead
    of the upper one's) breaks the output distribution, and the same test sees it."""
    drafter = _sampling_drafters()[name]
    propose = drafter.propose

    def wrong_q(sequence, tau, **kwargs):
        draft = propose(sequence, tau, **kwargs)
        return sc.Draft(draft.tokens, torch.full_like(draft.q, 1.0 / draft.q.shape[1]) if name == "prompt lookup"
                        else torch.softmax(drafter.lower.model.table[sequence[0, -1]], -1).expand_as(draft.q).clone())

    monkeypatch.setattr(drafter, "propose", wrong_q)
    target = _bigram_target()
    counts = _counts(target, drafter, SAMPLES)
    stat, critical = _chi_square(counts, target.sequence_probs(0, 3, 1.0), SAMPLES)
    assert stat > critical, f"{name} with a wrong q went unnoticed: chi-square {stat:.1f} <= {critical:.1f}"


# ---------------------------------------------------------------- the real target's quantized copy
@pytest.mark.real
def test_the_real_targets_4bit_copies_recover_its_grid_and_keep_greedy_output(target):
    from test_generation import PROMPTS

    model, tokenizer = target
    exact = quantized_copy(model, "int4-exact")
    assert exact.quantized_exact, "SmolLM2's weights should lie on the Q4_1 / Q8_0 grids of its GGUF file"
    ids = sc.chat_prompt(tokenizer, PROMPTS[0])
    with torch.no_grad():  # on the recovered grid with float32 arithmetic: the target's own function
        assert torch.allclose(exact(ids).logits, model(ids).logits, atol=2e-3)
    drafter = quantized_self_draft(model, "int4")
    assert drafter.model.quantized_exact
    eos = tokenizer.eos_token_id
    accepted = drafted = 0
    for prompt in PROMPTS[:2]:
        ids = sc.chat_prompt(tokenizer, prompt)
        reference = sc.autoregressive_generate(model, ids, 48, eos_token_id=eos).tokens
        result = speculative.speculative_generate(model, drafter, ids, 48, tau=4, eos_token_id=eos)
        position, margin = first_mismatch_margin(model, ids, reference, result.tokens)
        assert result.tokens == reference, f"{prompt!r}: first mismatch at new token {position}, top-2 logit margin {margin}"
        accepted += sum(s.n_accepted for s in result.steps)
        drafted += result.drafted
    assert accepted / drafted > 0.9, f"the int4 copy agreed on only {accepted}/{drafted} drafts"


@pytest.mark.real
def test_the_drafter_benchmark_runs_every_row_side_by_side(target, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from specdec_course.perf.benchmark import drafter_benchmark, format_drafter_table, pass_floors
    from specdec_course.course.viz import plot_drafters

    model, tokenizer = target
    draft = sc.load_draft(target=model, verbose=False)
    drafters = {"draft model": ModelDrafter(draft), "prompt lookup": PromptLookup.for_model(model)}
    from specdec_course.distill import load_prompts

    prompts = load_prompts("rewrite")[:1]
    report = drafter_benchmark(model, tokenizer, drafters, taus=(2,), max_new_tokens=6, prompts=prompts, draft=draft,
                               cost_repeats=1, progress=False)
    configs = [(r["config"], r["tau"]) for r in report["rows"]]
    assert configs == [("target only (course loop)", None), ("draft model", 2), ("prompt lookup", 2),
                       ("transformers prompt lookup", 2), ("transformers assisted", 2)]
    assert all(r["identical"] for r in report["rows"]), report["rows"]
    for row in report["rows"][1:3]:
        assert 0 <= row["alpha"] <= 1 and row["c"] >= 0 and row["predicted"] > 0 and row["tokens_per_pass"] >= 1
    assert report["rows"][2]["c"] < report["rows"][1]["c"]  # prompt lookup runs no model: cheaper than any draft model
    table = format_drafter_table(report)
    assert "prompt lookup" in table and "best:" in table and "identical: True" in table and "floor" not in table
    report["floor"] = pass_floors(model, drafters)  # the bench's header: each model's one-token pass beside its floor
    lines = {line[:40].strip(): line for line in format_drafter_table(report).split("\n")}
    assert lines["draft model"].endswith(f"{report['drafter_costs_ms']['draft model']['d']:7.2f} "
                                         f"{report['floor']['ms']['draft model']:5.2f}")
    assert lines["target only (course loop)"].endswith(f"{report['floor']['ms']['target']:5.2f}")
    assert lines["prompt lookup"].rstrip().endswith("yes")  # no model, no floor
    plot_drafters(report).figure.savefig(tmp_path / "drafters.png")


def test_a_long_pass_of_the_quantized_copy_uses_the_targets_float_weights_and_a_short_one_its_4bit_kernels():
    from specdec_course.drafters.compact import choose_float_from

    target = sc.tiny_llama(0, peaked=2.0)
    copy = quantized_copy(target, "int4")
    copy.float_from = 4
    ids = torch.tensor([REPEATING_PROMPT])
    with torch.no_grad():
        expected = target(ids).logits
        assert torch.allclose(copy(ids).logits, expected, atol=1e-4)               # 10 tokens: the float weights
        assert not torch.allclose(copy(ids[:, :3]).logits, expected[:, :3], atol=1e-4)  # 3 tokens: 4-bit, bf16
        copy.float_from = None
        assert not torch.allclose(copy(ids).logits, expected, atol=1e-4)           # never: 4 bits throughout
    copy.float_from = 8
    chosen = choose_float_from(copy, candidates=(2, 4))
    assert chosen in (2, 4, None) and copy.float_from == 8  # measured; the model's setting is left as it was
