"""The HF backend on a GPU: random-weight Llama-2-7B shape + llama-68m draft, bf16 (issue 3, claim 4).

    python benchmarks/gpu_llama7b.py [--batch-sizes 1 2 4 8 16 32 64] [--new-tokens 32] --out FILE

For each batch size: HF plain `generate` and autospec at fixed spec_len 0, 1, 3, 5, 7 and `auto`
(prior: the shipped H200 profile), EOS suppressed, prompts of 128 random tokens. Random weights
mean the draft's proposals are almost never accepted: this measures what each step costs. From
the step records: the target's verify forward per (batch, q) and the draft's forward per token,
beside the same cells of benchmarks/reference/h200_step_times.json (HF eager + DynamicCache, and
the CUDA-graph floor). Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from autospec.entrypoints.engine import AutoSpec

SHAPES = {"llama2-7b": (4096, 32, 32, 32, 11008), "llama-68m": (768, 2, 12, 12, 3072)}
REFERENCE = Path(__file__).parent / "reference" / "h200_step_times.json"


def build(name: str) -> LlamaForCausalLM:
    hidden, layers, heads, kv_heads, inter = SHAPES[name]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=inter, vocab_size=32000,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():                       # keep activations finite over many layers
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.1)
            layer.mlp.down_proj.weight.mul_(0.1)
    return model.eval()


def timed(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def run_batch(target, draft, batch_size: int, new_tokens: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(batch_size)
    ids = torch.randint(3, 32000, (batch_size, 128), device="cuda", generator=g)
    kwargs = dict(max_new_tokens=new_tokens, eos_token_id=-1, pad_token_id=0)
    hf_s, _ = timed(lambda: target.generate(input_ids=ids, do_sample=False, **kwargs))
    out = {"hf_plain": {"wall_s": hf_s, "tokens_per_s": batch_size * new_tokens / hf_s}}
    for spec in ["fixed:0", "fixed:1", "fixed:3", "fixed:5", "fixed:7", "auto"]:
        engine = AutoSpec(target, draft, controller=spec, cost_model="h200-llama2-7b-llama-68m", max_batch_size=batch_size)
        wall, _ = timed(lambda: engine.generate(ids, **kwargs))
        verify, drafts = defaultdict(list), []
        for r in engine.records:
            q = r.verified_width
            verify[q].append(r.verify_time_s * 1e3)
            if r.spec_len:
                drafts.append(r.draft_time_s * 1e3 / r.spec_len)
        out[spec] = {"wall_s": wall, "tokens_per_s": batch_size * new_tokens / wall,
                     "speedup_vs_hf_plain": hf_s / wall, "mean_spec_len": statistics.mean(r.spec_len for r in engine.records),
                     "verify_ms_by_q": {q: statistics.median(v) for q, v in sorted(verify.items())},
                     "draft_ms_per_token": statistics.median(drafts) if drafts else None,
                     "overhead_ms_per_step": statistics.median(r.overhead_time_s * 1e3 for r in engine.records),
                     "acceptance_rate": sum(r.num_accepted_tokens for r in engine.records) /
                                        max(1, sum(r.num_draft_tokens for r in engine.records))}
    return out


def compare_with_reference(results: dict) -> list[dict]:
    ref = json.loads(REFERENCE.read_text())["models"]
    rows = []
    for b, res in results.items():
        measured = defaultdict(list)
        for spec, row in res.items():
            for q, ms in row.get("verify_ms_by_q", {}).items():
                measured[int(q)].append(ms)
        for q, values in sorted(measured.items()):
            key = f"{b},{q}"
            rows.append({"batch_size": b, "q": q, "autospec_verify_ms": statistics.median(values),
                         "reference_hf_eager_ms": ref["llama2-7b"]["hf"].get(key),
                         "reference_graph_ms": ref["llama2-7b"]["graph"].get(key)})
        drafts = [row["draft_ms_per_token"] for row in res.values() if row.get("draft_ms_per_token")]
        if drafts:
            rows.append({"batch_size": b, "q": "draft", "autospec_verify_ms": statistics.median(drafts),
                         "reference_hf_eager_ms": ref["llama-68m"]["hf"].get(f"{b},1"),
                         "reference_graph_ms": ref["llama-68m"]["graph"].get(f"{b},1")})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_llama7b.json"))
    args = parser.parse_args()
    import transformers
    t0 = time.time()
    target, draft = build("llama2-7b"), build("llama-68m")
    run_batch(target, draft, 1, 4)                                     # warm-up: kernels, cuBLAS handles
    results = {}
    for b in args.batch_sizes:
        results[b] = run_batch(target, draft, b, args.new_tokens)
        row = results[b]
        print(f"b={b:3d} hf_plain {row['hf_plain']['tokens_per_s']:8.1f} tok/s | " + " | ".join(
            f"{k} {v['speedup_vs_hf_plain']:.2f}x" for k, v in row.items() if k != "hf_plain"), flush=True)
    comparison = compare_with_reference(results)
    payload = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "transformers": transformers.__version__, "command": " ".join(sys.argv),
               "new_tokens": args.new_tokens, "wall_s": time.time() - t0, "results": results,
               "step_ms_vs_reference": comparison}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"\n{'b':>4}{'q':>7}{'autospec ms':>13}{'ref HF eager':>14}{'ref graph':>11}")
    for r in comparison:
        fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"
        print(f"{r['batch_size']:>4}{str(r['q']):>7}{fmt(r['autospec_verify_ms']):>13}"
              f"{fmt(r['reference_hf_eager_ms']):>14}{fmt(r['reference_graph_ms']):>11}")
    print(f"wrote {args.out} in {payload['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
