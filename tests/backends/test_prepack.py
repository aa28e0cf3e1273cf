"""Prepacked oneDNN linears on CPU bfloat16: bit-identical outputs, the user's model restored after use."""
import pytest
import torch

from autospec import AutoSpec
from autospec.backends.prepack import PackedLinears, maybe_packed, supported
from tests.backends.tiny_models import ragged_batch, tiny_llama

needs_packing = pytest.mark.skipif(not supported(tiny_llama().to(torch.bfloat16)),
                                   reason="this torch or CPU has no oneDNN bf16 linear path (e.g. AVX2 only)")


@pytest.fixture()
def bf16_pair():
    return tiny_llama(layers=2, seed=0).to(torch.bfloat16), tiny_llama(layers=1, seed=1).to(torch.bfloat16)


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


@needs_packing
def test_packed_forward_is_bit_identical_and_restored(bf16_pair):
    target, _ = bf16_pair
    ids, _ = ragged_batch(5, 97, seed=3)
    plain = logits(target, ids)
    packed = PackedLinears(target)
    assert len(packed) == 2 * 7 + 1                                  # q, k, v, o, gate, up, down per layer + head
    with packed.active():
        assert "forward" in vars(target.model.layers[0].mlp.up_proj)
        inside = logits(target, ids)
    assert torch.equal(inside, plain)
    assert not any("forward" in vars(m) for m in target.modules())


@needs_packing
def test_engines_share_one_packed_copy_and_nested_use_keeps_it_installed(bf16_pair):
    target, draft = bf16_pair
    first, second = AutoSpec(target, draft), AutoSpec(target, "ngram")
    assert first.prepacked[0] is second.prepacked[0]
    packed = first.prepacked[0]
    with packed.active():
        with packed.active():
            pass
        assert "forward" in vars(target.lm_head)                     # the outer block still runs packed
    assert "forward" not in vars(target.lm_head)


@needs_packing
def test_restored_after_an_exception(bf16_pair):
    target, _ = bf16_pair
    packed = PackedLinears(target)
    with pytest.raises(RuntimeError, match="boom"):
        with packed.active():
            raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in target.modules())


@needs_packing
def test_weight_changed_in_place_is_repacked(bf16_pair):
    target, _ = bf16_pair
    ids, _ = ragged_batch(2, 97, seed=4)
    packed = PackedLinears(target)
    with torch.no_grad():
        target.model.layers[1].mlp.down_proj.weight.mul_(-2.0)
    expected = logits(target, ids)
    with packed.active():
        assert torch.equal(logits(target, ids), expected)


@needs_packing
def test_generate_identical_with_and_without_prepack(bf16_pair):
    target, draft = bf16_pair
    ids, mask = ragged_batch(6, 97, seed=5)
    outs = []
    for prepack in (False, True):
        spec = AutoSpec(target, draft, controller="fixed:3", cpu_prepack=prepack)
        assert (spec.prepacked[0] is not None) == prepack
        outs.append(spec.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=-1, pad_token_id=0))
    assert torch.equal(outs[0], outs[1])


@needs_packing
def test_float32_is_not_packed_and_forcing_it_is_refused():
    target = tiny_llama()
    assert maybe_packed(target, None) is None
    with pytest.raises(ValueError, match="CPU bfloat16"):
        AutoSpec(target, "ngram", cpu_prepack=True)


def test_a_cpu_without_onednns_bf16_path_runs_unpacked(monkeypatch, bf16_pair):
    """AVX2-only CPUs: oneDNN's bf16 reorder raises there; autospec must not pack (and still decode)."""
    import autospec.backends.prepack as prepack
    target, draft = bf16_pair

    def no_bf16_path(*args, **kwargs):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw")
    prepack.cpu_can_pack.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", no_bf16_path, raising=False)
    try:
        assert not supported(target) and maybe_packed(target, None) is None
        with pytest.raises(ValueError, match="AVX-512"):
            PackedLinears(target)
    finally:
        monkeypatch.undo()
        prepack.cpu_can_pack.cache_clear()
