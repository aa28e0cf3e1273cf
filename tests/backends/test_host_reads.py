"""One host read per decode step (issue 19): the draft loop, verification, both caches' commits and
compaction stay on the device until the step reads its results once.

On CPU a read is any call that turns tensor data into host values (`tolist`, `item`, `bool`, `int`,
`nonzero`, a boolean-mask index, ...), counted by a TorchFunctionMode between the controller's
`choose` and its `observe`, i.e. around exactly one step; the same mode counts uploads that would
block a CUDA host (a tensor built from host values with `device=`, bypassing
`backends.transfer.upload`). On CUDA, torch's own sync debug mode counts the synchronisations.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

from autospec import AutoSpec
from autospec.backends.hf import GenerationRequest
from tests.backends.tiny_models import ragged_batch, tiny_llama

READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu",
         "equal", "allclose", "is_nonzero", "unique", "masked_select", "repeat_interleave"}
BUILDERS = {"tensor", "as_tensor"}


def _bool_index(args) -> bool:
    """A __getitem__ / __setitem__ whose index holds a boolean tensor (a data-dependent shape)."""
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class HostReads(TorchFunctionMode):
    """Counts host reads and blocking uploads while active."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []
        self.uploads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or (name in ("__getitem__", "__setitem__") and _bool_index(args)):
            self.reads.append(name)
        if name in BUILDERS and kwargs.get("device") is not None:
            self.uploads.append(name)
        return func(*args, **kwargs)


class CountingController:
    """A fixed schedule of spec_lens (public Controller protocol) that counts each step's reads."""
    name = "counting"

    def __init__(self, spec_lens: list[int]):
        self.spec_lens, self.steps = spec_lens, []
        self._mode: HostReads | None = None

    def choose(self, ctx):
        self._mode = HostReads()
        self._mode.__enter__()
        return self.spec_lens[len(self.steps) % len(self.spec_lens)]

    def observe(self, record):
        self._mode.__exit__(None, None, None)
        self.steps.append((record.spec_len, self._mode.reads, self._mode.uploads))

    def scores(self, ctx):
        return {s: (float("nan"), float("nan")) for s in range(ctx.max_spec_len + 1)}


SCHEDULE = [0, 3, 1, 4, 0, 2, 5]


@pytest.mark.parametrize("drafter", ["model", "ngram"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_every_step_reads_the_device_once(drafter, do_sample):
    target = tiny_llama(layers=2)
    draft = tiny_llama(layers=1, seed=1) if drafter == "model" else "ngram"
    ids, mask = ragged_batch(4, 97, seed=3, min_len=3)
    controller = CountingController(SCHEDULE)
    spec = AutoSpec(target, draft, controller=controller, max_batch_size=4)
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=14, eos_token_id=-1, do_sample=do_sample)
    assert len(controller.steps) >= len(SCHEDULE)
    for spec_len, reads, uploads in controller.steps:
        assert reads == ["tolist"], f"spec_len {spec_len}: host reads {reads}"
        assert uploads == [], f"spec_len {spec_len}: blocking uploads {uploads}"
    if not do_sample:
        reference = target.generate(ids, attention_mask=mask, max_new_tokens=14, do_sample=False, eos_token_id=-1,
                                    pad_token_id=0)
        assert torch.equal(out, reference)


def test_rows_retiring_at_different_steps_still_read_once():
    target, draft = tiny_llama(layers=2), tiny_llama(layers=1, seed=1)
    ids, _ = ragged_batch(4, 97, seed=9, min_len=4)
    requests = [GenerationRequest(row[row != 0].tolist(), budget, request_id=i)
                for i, (row, budget) in enumerate(zip(ids, [6, 11, 15, 20]))]
    controller = CountingController(SCHEDULE)
    result = AutoSpec(target, draft, controller=controller, max_batch_size=4).serve(requests, eos_token_id=-1,
                                                                                    progress=False)
    lengths = {r.request_id: len(r.output_ids) for r in result.results}
    assert lengths == {0: 6, 1: 11, 2: 15, 3: 20}
    batch_sizes = {record.batch_size for record in result.records}
    assert len(batch_sizes) >= 3, batch_sizes                    # rows left at different steps
    for spec_len, reads, uploads in controller.steps:
        assert reads == ["tolist"] and uploads == [], (spec_len, reads, uploads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_steps_synchronise_once():
    target, draft = tiny_llama(layers=2, device="cuda"), tiny_llama(layers=1, seed=1, device="cuda")
    ids, mask = ragged_batch(4, 97, seed=3, min_len=3, device="cuda")

    class SyncCounting(CountingController):
        def choose(self, ctx):
            self._caught = warnings.catch_warnings(record=True)
            self._seen = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            return self.spec_lens[len(self.steps) % len(self.spec_lens)]

        def observe(self, record):
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            syncs = [w for w in self._seen if "synchroniz" in str(w.message)]
            self.steps.append((record.spec_len, syncs, []))

    controller = SyncCounting(SCHEDULE)
    AutoSpec(target, draft, controller=controller, max_batch_size=4).generate(ids, attention_mask=mask,
                                                                              max_new_tokens=14, eos_token_id=-1)
    for spec_len, syncs, _ in controller.steps:
        assert len(syncs) == 1, (spec_len, [str(w.message) for w in syncs])
