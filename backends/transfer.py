"""Host <-> device transfers of the HF backend's step, in one place so the step's syncs can be counted.

Contract:
- `upload(values, device)` makes a tensor from host values without blocking the host: on CUDA the
  values go through pinned memory with `non_blocking=True` (the copy is queued on the stream, and
  the kernels that read it wait for it, not the host); elsewhere it is a plain `torch.tensor`.
- `read_host(*tensors)` is a step's one device -> host read: every tensor (1-D or 2-D, integer or
  bool) is flattened into one buffer, copied with a single `.tolist()`, and split back into a
  list per tensor (1-D -> list[int], 2-D -> list[list[int]]). Shapes are host metadata, so the
  split itself reads nothing.
"""
from __future__ import annotations

from typing import Sequence

import torch


def upload(values: Sequence, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Host values (a flat or nested list) -> a tensor on `device`; never a blocking copy on CUDA."""
    if device.type == "cpu":
        return torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


def read_host(*tensors: torch.Tensor) -> list[list]:
    """1-D / 2-D tensors -> their values as host lists, read with one device -> host copy."""
    for t in tensors:
        if t.dim() not in (1, 2):
            raise ValueError(f"read_host takes 1-D or 2-D tensors, got shape {tuple(t.shape)}")
    values = torch.cat([t.reshape(-1).to(torch.long) for t in tensors]).tolist() if tensors else []
    out, start = [], 0
    for t in tensors:
        n = t.numel()
        chunk = values[start:start + n]
        start += n
        out.append(chunk if t.dim() == 1 else _rows(chunk, t.shape[1], t.shape[0]))
    return out


def _rows(values: list[int], width: int, num_rows: int) -> list[list[int]]:
    """A flat list -> `num_rows` rows of `width` values."""
    return [values[i * width:(i + 1) * width] for i in range(num_rows)]
