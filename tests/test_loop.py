import pytest

from autospec import MemorySink, StepContext, run_loop
from autospec.backends import SimulatedBackend, Workload
from autospec.controllers import FixedController


class Recorder:
    """A controller that remembers what it saw."""
    name = "recorder"

    def __init__(self, answer=2):
        self.answer, self.contexts, self.records = answer, [], []

    def choose(self, ctx: StepContext) -> int:
        self.contexts.append(ctx)
        return self.answer

    def observe(self, record) -> None:
        self.records.append(record)

    def scores(self, ctx):
        return {s: (1.0, 0.0) for s in range(ctx.max_spec_len + 1)}


def test_the_loop_asks_steps_feeds_back_and_writes(h200):
    backend = SimulatedBackend(h200, Workload(schedule=((3, 1), (3, 5)), steps=6), max_spec_len=4)
    ctl, sink = Recorder(), MemorySink()
    records = run_loop(backend, ctl, [sink])
    assert [c.batch_size for c in ctl.contexts] == [1, 1, 1, 5, 5, 5]
    assert ctl.records == records == sink.records
    assert all(r.controller == "recorder" and r.spec_len == 2 for r in records)


def test_an_out_of_range_choice_is_refused_before_the_step_runs(h200):
    backend = SimulatedBackend(h200, Workload(batch_size=2, steps=5), max_spec_len=4)
    with pytest.raises(ValueError, match="spec_len must be in 0..4, got 7"):
        run_loop(backend, Recorder(answer=7))
    assert backend.step_index == 0


def test_max_steps_and_scores(h200, tmp_path):
    from autospec import RunWriter
    backend = SimulatedBackend(h200, Workload(batch_size=2, steps=100), max_spec_len=4)
    writer = RunWriter("x", runs_dir=tmp_path)
    records = run_loop(backend, FixedController(spec_len=1, max_spec_len=4), [writer], max_steps=10, scores_every=5)
    writer.close()
    assert len(records) == 10
    assert len((writer.dir / "scores.jsonl").read_text().splitlines()) == 2
