"""Greedy generation through vLLM in a process of its own:
`python vllm_generate.py MODE MODEL_DIR OUT_JSON [RUNS_DIR]`, MODE = plain | online (n-gram drafts,
autospec's scheduler choosing K, its run log under RUNS_DIR). Writes the token ids per prompt.
The engine core runs in this process and is shut down explicitly at the end, so the scheduler's
shutdown (which closes the run log) runs before the process exits: with a spawned engine core,
vLLM may kill it before its shutdown completes on a slow host."""
import json
import os
import sys
import time
from pathlib import Path

PROMPTS = [[1, 520, 33, 17, 520, 33, 17, 520, 33] * 2, [3, 4, 5, 6] * 4, [100, 200, 300] * 5, [77] * 10,
           [9, 8, 7, 6, 5, 4, 3, 2], [42, 43] * 6]


def engine_args(mode: str, model: str, runs_dir: str | None) -> dict:
    args = dict(model=model, max_model_len=512, max_num_seqs=4, dtype="bfloat16", enforce_eager=True, seed=0,
                gpu_memory_utilization=0.3)
    if mode == "online":
        args["speculative_config"] = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
                                      "num_speculative_tokens_per_batch_size": [[1, 4, 3]]}
        args["scheduler_cls"] = "autospec.integrations.vllm.AutoSpecScheduler"
        args["additional_config"] = {"autospec": {"controller": "auto", "profile": "cpu-smollm2-135m-ngram-bf16",
                                                  "run_name": "vllm-online", "runs_dir": runs_dir}}
    return args


def main() -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    mode, model, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    llm = LLM(**engine_args(mode, model, sys.argv[4] if len(sys.argv) > 4 else None))
    t0 = time.perf_counter()
    results = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                           SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))
    out.write_text(json.dumps({"tokens": [list(r.outputs[0].token_ids) for r in results],
                               "generate_s": time.perf_counter() - t0}))
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
