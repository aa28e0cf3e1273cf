"""Prepacked oneDNN weights for the linear layers of a CPU bfloat16 model.

Contract:
- `PackedLinears(model)` finds every `nn.Linear` of a model on the CPU in bfloat16 and keeps a
  copy of its weight reordered once into oneDNN's blocked layout (`supported(model)` says whether
  it applies: CPU, bfloat16, a torch built with oneDNN, and a CPU where oneDNN has a bfloat16 path:
  AVX-512 (bw, vl, dq) or AVX-NE-CONVERT; an AVX2-only CPU runs the model unpacked).
- `with packed.active():` routes those modules' forwards through the packed op and restores the
  model afterwards, so the user's own calls outside the block are untouched. A weight changed in
  place since it was packed (its version counter moved) is packed again on entry.
- Outputs are bit-identical to `nn.Linear`'s: CPU bf16 `linear` already runs oneDNN's kernels,
  only the weight reorder is hoisted out of every call (measured on this project's 2-core CPU:
  SmolLM2-135M forwards 1.1-1.7x faster, logits max difference 0). Memory: one more copy of the
  linear weights, shared by every engine over the same model (`maybe_packed`). Float32 is not
  packed: its packed kernels round differently from MKL's sgemm.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Iterator

import torch
from torch import nn

BATCH_HINT = 16   # the rows oneDNN tunes the blocked layout for; 1..64 measured within 10%


def supported(model: nn.Module) -> bool:
    """CPU, bfloat16 weights and a torch with oneDNN's linear ops."""
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu" or param.dtype != torch.bfloat16:
        return False
    return cpu_can_pack()


@functools.cache
def cpu_can_pack() -> bool:
    """oneDNN's bf16 linear ops exist in this torch and run on this CPU (a one-off 8x8 probe)."""
    ops = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        probe = torch.ones(8, 8, dtype=torch.bfloat16)
        ops._linear_pointwise(probe, ops._reorder_linear_weight(probe, BATCH_HINT), None, "none", [], "")
    except RuntimeError:                     # "bf16 path needs the cpu support avx_ne_convert or avx512bw, ..."
        return False
    return True


class _Packed:
    """One linear's packed weight and the version of the weight it was packed from."""

    def __init__(self, linear: nn.Linear):
        self.linear = linear
        self.pack()

    def pack(self) -> None:
        weight = self.linear.weight.detach()                                  # [out, in]
        self.version = _version(self.linear.weight)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), BATCH_HINT)

    def stale(self) -> bool:
        return _version(self.linear.weight) != self.version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.linear.bias, "none", [], "")


def _version(weight: torch.Tensor) -> int | None:
    """The in-place modification counter (None for an inference tensor, which has none)."""
    try:
        return weight._version
    except RuntimeError:
        return None


class PackedLinears:
    def __init__(self, model: nn.Module):
        if not supported(model):
            raise ValueError("prepacked linears need a CPU bfloat16 model, a torch built with oneDNN and a CPU "
                             "with its bfloat16 path (AVX-512 bw/vl/dq or AVX-NE-CONVERT)")
        with torch.inference_mode(False), torch.no_grad():
            self.layers = [_Packed(m) for m in model.modules() if type(m) is nn.Linear]
        self._depth = 0                                                      # nested `active()` blocks

    def __len__(self) -> int:
        return len(self.layers)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self._depth == 0:
            self._install()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                for layer in self.layers:
                    layer.linear.__dict__.pop("forward", None)

    def _install(self) -> None:
        for layer in self.layers:
            if layer.stale():
                layer.pack()
            layer.linear.forward = layer.forward                             # an instance attribute shadows the method


_SHARED: "weakref.WeakKeyDictionary[nn.Module, PackedLinears]" = weakref.WeakKeyDictionary()


def maybe_packed(model: nn.Module, enabled: bool | None) -> PackedLinears | None:
    """`enabled` None: pack where `supported`; True: pack or raise; False: never. Engines over the
    same model share one packed copy (held while the model lives)."""
    if enabled is False or (enabled is None and not supported(model)):
        return None
    if model not in _SHARED:
        _SHARED[model] = PackedLinears(model)
    return _SHARED[model]
