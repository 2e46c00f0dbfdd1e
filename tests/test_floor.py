"""The bandwidth floor: bytes a one-token pass reads, counted from the model's own tensors (perf/floor.py)."""
import pytest
import torch

import specdec_course as sc
from specdec_course.drafters import ModelDrafter, PromptLookup, quantized_copy
from specdec_course.drafters.quantized import Int4Linear, RescoredHead
from specdec_course.perf import floor
from specdec_course.perf.benchmark import format_floors, pass_floors


def _expected_float_bytes(model):
    """Every parameter and buffer once, but of the embedding table one row."""
    tensors = {t.data_ptr(): t for t in list(model.parameters()) + list(model.buffers())}
    table = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == table.data_ptr()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    return total if tied else total - table.nbytes + table[0].nbytes


def test_a_float_model_reads_its_weights_once_and_one_embedding_row():
    model = sc.tiny_llama(0)
    assert floor.bytes_per_pass(model) == _expected_float_bytes(model)
    tied = sc.tiny_llama(0)
    tied.lm_head.weight = tied.model.embed_tokens.weight  # the output layer reads the whole table: counted once
    assert floor.bytes_per_pass(tied) == _expected_float_bytes(tied)
    assert floor.bytes_per_pass(tied) - floor.bytes_per_pass(model) == -tied.lm_head.weight[0].nbytes


def test_the_context_adds_its_cached_keys_and_values():
    model = sc.tiny_llama(0)
    c = model.config
    per_position = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
    assert floor.bytes_per_pass(model, context=10) - floor.bytes_per_pass(model) == 10 * per_position


def test_4bit_layers_count_their_packed_bytes_and_a_rescored_head_its_rows():
    linear = torch.nn.Linear(64, 48, bias=False)
    quantized = Int4Linear.from_linear(linear)
    rows = 48  # padded to a multiple of 16 already
    assert floor.bytes_per_pass(quantized) == rows * 64 // 2 + rows * (64 // 32) * 2 * 4  # 4 bits each; scale, zero
    head = RescoredHead(linear, top=8)
    assert floor.bytes_per_pass(head) == floor.bytes_per_pass(head.cheap) + 8 * 64 * 4
    target = sc.tiny_llama(1)
    copy = quantized_copy(target, "int4")
    assert floor.bytes_per_pass(copy) < 0.5 * floor.bytes_per_pass(target)


def test_the_bench_header_gives_each_models_bytes_and_floor():
    target = sc.tiny_llama(2)
    drafters = {"draft model": ModelDrafter(sc.tiny_llama(3)), "prompt lookup": PromptLookup.for_model(target)}
    floors = pass_floors(target, drafters)
    assert set(floors["mb"]) == {"target", "draft model"}  # prompt lookup reads no model
    assert floors["mb"]["target"] == floor.bytes_per_pass(target) / 1e6
    assert floors["ms"]["target"] == pytest.approx(floors["mb"]["target"] / floors["bandwidth_gb_s"])
    line = format_floors(floors)
    assert "target" in line and "draft model" in line and "GB/s" in line


def test_copy_bandwidth_is_measured_and_bad_sizes_are_refused():
    assert floor.copy_bandwidth(megabytes=4, repeats=2) > 0
    with pytest.raises(ValueError, match="at least 1"):
        floor.copy_bandwidth(megabytes=0)
    assert floor.floor_ms(2 * 10**9, 1.0) == 2000.0


def test_an_int8_copy_of_a_column_major_weight_runs():
    # the "column-major-head" kernel path stores the output layer's W transposed in memory (same numbers)
    from specdec_course.drafters.quantized import Int8Linear

    linear = torch.nn.Linear(64, 48, bias=False)
    strided = torch.nn.Linear(64, 48, bias=False)
    strided.weight = torch.nn.Parameter(linear.weight.detach().t().contiguous().t())
    assert not strided.weight.is_contiguous()
    x = torch.randn(3, 64)
    assert torch.equal(Int8Linear(strided)(x), Int8Linear(linear)(x))
