"""SlotCache.trim: holes are reclaimed early only when they dominate the attended width."""
import torch

from autospec.backends.kv_cache import SlotCache


def test_trim_compacts_only_a_sparse_cache():
    cache = SlotCache(num_layers=1, rows_capacity=2, slots_capacity=512, device="cpu")
    cache.prefill_inputs([10, 6])
    for _ in range(20):                                   # 20 steps of 5 fed tokens, 1 kept per row
        cache.decode_inputs(5)
        cache.commit(torch.tensor([[True, False, False, False, False]] * 2))
    longest = int(cache.pos[:2].max())
    assert (longest, cache.cursor) == (30, 110)
    assert not cache.trim(longest, slack=128)             # 80 wasted slots < 128: left alone
    assert cache.cursor == 110
    assert cache.trim(longest, slack=64)                  # 80 >= max(64, 15): compacted
    assert cache.cursor == longest and cache.pos[:2].tolist() == [30, 26]
    assert cache.valid[:2].sum(1).tolist() == [30, 26] and not cache.valid[:, 30:].any()
