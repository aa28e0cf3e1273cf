"""The vLLM integration's engine-free half (autospec.integrations.vllm_steps), with stand-ins for
vLLM's SchedulerOutput / ModelRunnerOutput (the fields it reads, by name). The same half runs
against vLLM's real scheduler classes in tests/integrations/test_vllm_scheduler.py (vLLM's venv)."""
import json
from types import SimpleNamespace

import pytest

from autospec.integrations.vllm_steps import SpecLenDecisions, VllmSettings, build_decisions, decode_rows
from autospec.runs import read_steps


class Scripted:
    """A controller that plays a script of K values and keeps what it observes."""
    name = "scripted"

    def __init__(self, ks):
        self.ks, self.seen, self.contexts = list(ks), [], []

    def choose(self, ctx):
        self.contexts.append(ctx)
        return self.ks.pop(0) if self.ks else 0

    def observe(self, record):
        self.seen.append(record)


def output(rows, spec=None, invalid=None, sampled=None):
    """(SchedulerOutput, ModelRunnerOutput) stand-ins: rows = {req_id: num_scheduled_tokens}."""
    spec = spec or {}
    ids = list(rows)
    so = SimpleNamespace(total_num_scheduled_tokens=sum(rows.values()), num_scheduled_tokens=dict(rows),
                         scheduled_spec_decode_tokens=spec, num_invalid_spec_tokens=invalid or {})
    mro = SimpleNamespace(req_id_to_index={r: i for i, r in enumerate(ids)},
                          sampled_token_ids=[sampled.get(r, [7]) if sampled else [7] for r in ids])
    return so, mro


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def step(decisions, clock, k_rows, static_k, so_mro, dt=0.01):
    """One engine step: schedule (a decision), run dt seconds, complete."""
    k = decisions.choose(k_rows, static_k)
    decisions.scheduled(so_mro[0].total_num_scheduled_tokens)
    clock.now += dt
    return k, decisions.completed(*so_mro)


def test_a_verify_result_is_attributed_to_the_decision_whose_drafts_it_verified():
    clock, ctrl = Clock(), Scripted([2, 3, 1])
    d = SpecLenDecisions(ctrl, max_spec_len=4, clock=clock)
    k0, first = step(d, clock, 2, 4, output({"a": 1, "b": 1}))                 # no drafts to verify yet
    assert (k0, first) == (2, None)
    verify_two = output({"a": 3, "b": 3}, spec={"a": [5, 5], "b": [5, 5]}, sampled={"a": [5, 5, 7], "b": [5, 7]})
    k1, record = step(d, clock, 2, 4, verify_two)
    assert k1 == 3 and record.spec_len == 2                # K chosen a step earlier, not this step's 3
    assert record.accepted_per_pos == (2, 1) and record.num_accepted_tokens == 3
    assert record.batch_size == 2 and record.num_draft_tokens == 4 and ctrl.seen == [record]


def test_completions_pair_with_decisions_in_schedule_order_under_async_scheduling():
    """AsyncScheduler schedules step N+1 before step N completes: decisions queue FIFO."""
    clock, ctrl = Clock(), Scripted([1, 2, 3])
    d = SpecLenDecisions(ctrl, max_spec_len=4, clock=clock)
    for _ in range(2):                                     # two steps scheduled ahead
        d.choose(1, 4)
        d.scheduled(1)
    clock.now += 0.01
    assert d.completed(*output({"a": 1})) is None          # step 1 (K=1 chosen): nothing verified yet
    d.choose(1, 4)
    d.scheduled(2)
    clock.now += 0.01
    rec2 = d.completed(*output({"a": 2}, spec={"a": [5]}, sampled={"a": [5, 7]}))
    clock.now += 0.01
    rec3 = d.completed(*output({"a": 3}, spec={"a": [5, 5]}, sampled={"a": [7]}))
    assert (rec2.spec_len, rec3.spec_len) == (1, 2)
    assert rec2.accepted_per_pos == (1,) and rec3.accepted_per_pos == (0, 0)


def test_prefill_chunks_are_excluded_and_a_row_without_drafts_is_rejected_at_position_zero():
    so, mro = output({"decode": 3, "nodraft": 1, "prefill": 64, "invalid": 3},
                     spec={"decode": [4, 4], "invalid": [4, 4]}, invalid={"invalid": 1},
                     sampled={"decode": [4, 4, 7], "nodraft": [7], "prefill": [7], "invalid": [4, 7]})
    rows = decode_rows(so, mro)
    assert [(r.num_draft_tokens, r.num_accepted_tokens) for r in rows] == [(2, 2), (0, 0), (1, 1)]
    clock, ctrl = Clock(), Scripted([2, 2])
    d = SpecLenDecisions(ctrl, max_spec_len=2, clock=clock)
    step(d, clock, 3, 2, output({"decode": 1}))
    _, record = step(d, clock, 3, 2, (so, mro))
    assert record.batch_size == 3 and record.rows_drafted_per_pos == (2, 1)
    assert record.accepted_per_pos == (2, 1) and record.verified_width == 3


def test_step_time_runs_from_the_previous_completion_unless_the_engine_sat_idle():
    clock, ctrl = Clock(), Scripted([1] * 10)
    d = SpecLenDecisions(ctrl, max_spec_len=2, clock=clock)
    verify = output({"a": 2}, spec={"a": [5]}, sampled={"a": [5, 7]})
    step(d, clock, 1, 2, output({"a": 1}), dt=0.02)
    clock.now += 0.005                                     # the engine's own work between steps counts
    _, busy = step(d, clock, 1, 2, verify, dt=0.02)
    assert busy.step_time_s == pytest.approx(0.025)
    clock.now += 5.0                                       # no requests for 5 s: not the step's cost
    _, after_idle = step(d, clock, 1, 2, verify, dt=0.02)
    assert after_idle.step_time_s == pytest.approx(0.02)


def test_arms_table_keeps_k_within_vllms_static_table_and_all_does_not():
    clock = Clock()
    within = SpecLenDecisions(Scripted([4]), max_spec_len=4, within_table=True, clock=clock)
    anyk = SpecLenDecisions(Scripted([4]), max_spec_len=4, within_table=False, clock=clock)
    assert within.choose(8, 1) == 1 and anyk.choose(8, 1) == 4
    capped = SpecLenDecisions(Scripted([9]), max_spec_len=3, within_table=False, clock=clock)
    assert capped.choose(1, 4) == 3


def test_a_failing_controller_falls_back_to_the_static_table_and_serving_goes_on():
    class Broken(Scripted):
        def observe(self, record):
            raise RuntimeError("boom")
    clock = Clock()
    d = SpecLenDecisions(Broken([2, 2, 2]), max_spec_len=2, clock=clock)
    step(d, clock, 1, 1, output({"a": 1}))
    step(d, clock, 1, 1, output({"a": 2}, spec={"a": [5]}))      # observe raises here
    assert not d.active and "RuntimeError: boom" in d.failure
    assert d.choose(1, 1) == 1                                   # vLLM's table from now on
    assert d.completed(*output({"a": 2}, spec={"a": [5]})) is None


def test_settings_name_the_field_they_refuse():
    with pytest.raises(ValueError, match="unknown keys \\['controler'\\]"):
        VllmSettings.parse({"controler": "auto"}, 4, environ={})
    with pytest.raises(ValueError, match="max_spec_len=6 .*0..4.*num_speculative_tokens"):
        VllmSettings.parse({"max_spec_len": 6}, 4, environ={})
    with pytest.raises(ValueError, match="arms='some'"):
        VllmSettings.parse({"arms": "some"}, 4, environ={})
    settings = VllmSettings.parse({}, 3, environ={"AUTOSPEC_VLLM_CONTROLLER": "fixed:2", "AUTOSPEC_VLLM_SEED": "5"})
    assert (settings.controller, settings.seed, settings.max_spec_len, settings.arms) == ("fixed:2", 5, 3, "table")


def test_unknown_controllers_and_profiles_of_another_model_are_refused_before_serving():
    llama7b = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, vocab_size=32000)
    with pytest.raises(ValueError, match="nosuch"):
        build_decisions(VllmSettings(controller="nosuch", max_spec_len=3))
    with pytest.raises(ValueError, match="takes no option 'typo'"):
        build_decisions(VllmSettings(controller="auto", options={"typo": 1}, max_spec_len=3))
    with pytest.raises(ValueError, match="cpu-smollm2-135m-ngram-bf16 was measured for a target with"):
        build_decisions(VllmSettings(profile="cpu-smollm2-135m-ngram-bf16", max_spec_len=3), hf_config=llama7b)
    smollm2 = SimpleNamespace(hidden_size=576, num_hidden_layers=30, vocab_size=49152)
    d = build_decisions(VllmSettings(profile="cpu-smollm2-135m-ngram-bf16", max_spec_len=3), hf_config=smollm2)
    assert d.cost_model.name == "cpu-smollm2-135m-ngram-bf16"


def test_records_reach_the_run_log_the_dashboard_reads(tmp_path):
    clock = Clock()
    d = build_decisions(VllmSettings(controller="fixed:1", max_spec_len=2, run_name="vllm-test",
                                     runs_dir=str(tmp_path)), clock=clock, meta={"model": "m"})
    for _ in range(4):
        step(d, clock, 1, 2, output({"a": 2}, spec={"a": [5]}, sampled={"a": [5, 7]}))
    d.close()
    records = read_steps(tmp_path / "vllm-test" / "steps.jsonl")
    meta = json.loads((tmp_path / "vllm-test" / "run.json").read_text())
    assert len(records) == 3 and all(r.spec_len == 1 and r.num_accepted_tokens == 1 for r in records)
    assert meta["kind"] == "vllm" and meta["model"] == "m"


def test_a_row_verifying_more_drafts_than_chosen_switches_the_controller_off():
    """The live self-check: vLLM drafting something other than the K autospec returned (its hook
    moved) must not feed the controller wrong feedback; vLLM's table decides from then on."""
    clock, ctrl = Clock(), Scripted([1, 3, 3])
    d = SpecLenDecisions(ctrl, max_spec_len=4, clock=clock)
    step(d, clock, 1, 4, output({"a": 1}))                                     # chooses K = 1
    k, record = step(d, clock, 1, 4, output({"a": 4}, spec={"a": [5, 5, 5]}))   # ... but 3 drafts came
    assert record is None and not ctrl.seen
    assert not d.active and "verified 3 drafts where autospec chose K = 1" in d.failure
    assert d.choose(1, 4) == 4


def test_fewer_drafts_than_chosen_are_normal_and_observed():
    clock, ctrl = Clock(), Scripted([3, 3])
    d = SpecLenDecisions(ctrl, max_spec_len=4, clock=clock)
    step(d, clock, 1, 4, output({"a": 1}))
    _, record = step(d, clock, 1, 4, output({"a": 2}, spec={"a": [5]}))        # n-gram found 1 of 3
    assert d.active and record is not None and record.spec_len == 3 and record.num_draft_tokens == 1
