"""Which KV layout makes the HF backend's forward fastest on this GPU (a diagnostic for the device run).

    eval "$(python benchmarks/gpu_attention_variants.py --out variants.json | tail -1)"

Times one forward of the random-weight Llama-2-7B (bf16) over a 128-token cache, q new tokens
per row, through `SlotCache` in each layout (boolean or additive mask; attended length padded to a
multiple of 1 or 16), beside HF's own DynamicCache forward on the same weights. Prints a table,
writes JSON, and prints last the environment settings of the fastest layout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_llama7b import build  # noqa: E402

from autospec.backends.drafters import forward_kwargs, model_forward  # noqa: E402
from autospec.backends.kv_cache import SlotCache  # noqa: E402

VARIANTS = {"bool": (1, False), "bool_align16": (16, False), "additive": (1, True), "additive_align16": (16, True)}
CELLS = [(1, 1), (1, 4), (4, 1), (4, 4), (16, 4)]
CONTEXT = 128


def median_ms(fn, reps: int = 15, warmup: int = 3) -> float:
    times = []
    for i in range(warmup + reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def hf_ms(model, b: int, q: int) -> float:
    from transformers.cache_utils import DynamicCache
    cache = DynamicCache(config=model.config)
    kw = forward_kwargs(model)
    model(input_ids=torch.randint(3, 32000, (b, CONTEXT), device="cuda"), use_cache=True, logits_to_keep=1, **{kw: cache})
    x = torch.randint(3, 32000, (b, q), device="cuda")
    position_ids = torch.arange(CONTEXT, CONTEXT + q, device="cuda")[None].expand(b, q)
    mask = torch.ones(b, CONTEXT + q, dtype=torch.long, device="cuda")

    def step():
        model(input_ids=x, attention_mask=mask, position_ids=position_ids, use_cache=True, logits_to_keep=q, **{kw: cache})
        cache.crop(-q)
    return median_ms(step)


@torch.inference_mode()
def slot_ms(model, b: int, q: int, kv_align: int, additive: bool) -> float:
    cache = SlotCache(model.config.num_hidden_layers, b, CONTEXT + 32, "cuda", dtype=torch.bfloat16,
                      kv_align=kv_align, additive_mask=additive)
    kw = forward_kwargs(model)
    position_ids, mask, _ = cache.prefill_inputs([CONTEXT] * b)
    model_forward(model, cache, torch.randint(3, 32000, (b, CONTEXT), device="cuda"), position_ids, mask, kw, 1)
    x = torch.randint(3, 32000, (b, q), device="cuda")

    def step():
        pos, m = cache.decode_inputs(q)
        model_forward(model, cache, x, pos, m, kw, q)
    return median_ms(step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = build("llama2-7b")
    rows = []
    for b, q in CELLS:
        row = {"batch_size": b, "q": q, "hf_dynamic_ms": hf_ms(model, b, q)}
        for name, (align, additive) in VARIANTS.items():
            row[name] = slot_ms(model, b, q, align, additive)
        rows.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    score = {name: statistics.geometric_mean([r[name] / r["hf_dynamic_ms"] for r in rows]) for name in VARIANTS}
    best = min(score, key=score.get)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows,
                                    "ratio_to_hf_geomean": score, "best": best}, indent=1))
    print("ratio to HF DynamicCache (geometric mean):", {k: round(v, 3) for k, v in score.items()})
    align, additive = VARIANTS[best]
    print(f"export AUTOSPEC_KV_ALIGN={align} AUTOSPEC_ADDITIVE_MASK={int(additive)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
