"""serve() under faults: a controller or sink that raises, a full disk, invalid requests and
KeyboardInterrupt. Each returns the finished outputs, names the unfinished requests and the cause,
leaves only whole lines in the run log, and the same engine serves the next call exactly."""
import _thread
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from autospec import AutoSpec, read_steps
from autospec.backends.hf import GenerationRequest
from tests.backends.tiny_models import ragged_batch, tiny_llama

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair():
    return tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)


def make_requests(n, seed=3, budget=12):
    ids, mask = ragged_batch(n, 97, seed=seed)
    prompts = [[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())]
    return [GenerationRequest(p, max_new_tokens=3 + (i * 5) % budget, request_id=f"q{i}") for i, p in enumerate(prompts)]


def reference(target, req):
    out = target.generate(torch.tensor([req.prompt_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                          eos_token_id=-1, pad_token_id=0)
    return out[0, len(req.prompt_ids):].tolist()


def assert_next_call_exact(spec, target):
    reqs = make_requests(6, seed=11)
    result = spec.serve(reqs, eos_token_id=-1, progress=False)
    assert result.error is None and result.unfinished == [] and not result.rejected
    assert [r.output_ids for r in result.results] == [reference(target, q) for q in reqs]


def assert_partial(result, reqs, target, cause):
    """Finished outputs exact and complete; every other request named; the cause given."""
    assert cause in (result.error or "")
    finished = {r.request_id for r in result.results}
    assert finished and result.unfinished and set(result.unfinished) == {q.request_id for q in reqs} - finished
    by_id = {q.request_id: q for q in reqs}
    for r in result.results:
        assert r.output_ids == reference(target, by_id[r.request_id])


class FailAt:
    """A controller (public protocol) that decodes plainly and raises `exc` at step `at`, in choose or observe."""
    name = "fail-at"

    def __init__(self, at, exc, where="choose"):
        self.at, self.exc, self.where, self.armed = at, exc, where, True

    def _maybe_raise(self, step):
        if self.armed and step >= self.at:
            self.armed = False
            raise self.exc

    def choose(self, ctx):
        if self.where == "choose":
            self._maybe_raise(ctx.step)
        return 2

    def observe(self, record):
        if self.where == "observe":
            self._maybe_raise(record.step)

    def scores(self, ctx):
        return {}


@pytest.mark.parametrize("where", ["choose", "observe"])
def test_a_controller_that_raises_keeps_finished_outputs_and_the_next_call_is_exact(pair, tmp_path, where):
    target, draft = pair
    spec = AutoSpec(target, draft, controller=FailAt(6, RuntimeError("controller bug"), where), max_batch_size=3,
                    run_name="ctl", runs_dir=tmp_path)
    reqs = make_requests(9)
    assert_partial(spec.serve(reqs, eos_token_id=-1, progress=False), reqs, target, "RuntimeError: controller bug")
    assert_next_call_exact(spec, target)
    spec.close()
    steps = read_steps(tmp_path / "ctl" / "steps.jsonl")                 # strict: only whole lines
    assert len(steps) == spec.memory.num_written            # every step that ran is logged, also the failed observe's


class FailingSink:
    """A sink (public protocol) whose `fail_at`-th write raises OSError, as a full disk would."""

    def __init__(self, fail_at):
        self.fail_at, self.writes = fail_at, 0

    def write(self, record):
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(28, "No space left on device")

    def close(self):
        pass


def test_a_sink_that_raises_keeps_finished_outputs_and_the_next_call_is_exact(pair):
    target, draft = pair
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=3, sinks=[FailingSink(8)])
    reqs = make_requests(9)
    assert_partial(spec.serve(reqs, eos_token_id=-1, progress=False), reqs, target, "No space left on device")
    assert_next_call_exact(spec, target)


DISK_FULL = r"""
import json, os, resource, signal, sys, tempfile
import torch
from autospec import AutoSpec, read_steps
from tests.backends.test_serve_faults import make_requests, reference
from tests.backends.tiny_models import tiny_llama

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)         # over the size limit, write() fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
runs = tempfile.mkdtemp()
steps_file = os.path.join(runs, "full", "steps.jsonl")

class FillTheDisk:
    # at the first call's step 5, the file-size limit falls to 40 bytes past the log's end: that line is cut midway
    armed = True
    def write(self, record):
        if record.step == 5 and self.armed:
            self.armed = False
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(steps_file) + 40, hard))
    def close(self):
        pass

target, draft = tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)
spec = AutoSpec(target, draft, controller="fixed:2", max_batch_size=3, sinks=[FillTheDisk()], run_name="full",
                runs_dir=runs)
reqs = make_requests(9)
first = spec.serve(reqs, eos_token_id=-1, progress=False)
lines_after_failure = len(read_steps(steps_file))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))   # space freed
again = make_requests(6, seed=11)
second = spec.serve(again, eos_token_id=-1, progress=False)
spec.close()
by_id = {q.request_id: q for q in reqs}
print(json.dumps({"error": first.error, "finished": [r.request_id for r in first.results],
                  "unfinished": first.unfinished, "lines_after_failure": lines_after_failure,
                  "first_exact": all(r.output_ids == reference(target, by_id[r.request_id]) for r in first.results),
                  "second_error": second.error,
                  "second_exact": [r.output_ids for r in second.results] == [reference(target, q) for q in again],
                  "lines_total": len(read_steps(steps_file)), "steps_written": spec.memory.num_written}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE fault injection is Linux-only")
def test_a_full_disk_mid_line_leaves_only_whole_lines_and_the_next_call_is_exact():
    """A real write failure (EFBIG from the file-size limit) cuts the run log's line midway."""
    run = subprocess.run([sys.executable, "-c", DISK_FULL], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["error"].startswith("OSError") and "File too large" in out["error"]
    assert out["finished"] and out["unfinished"] and out["first_exact"]
    assert out["lines_after_failure"] == 5                      # steps 0..4, nothing of step 5's line
    assert out["second_error"] is None and out["second_exact"]
    assert out["lines_total"] == out["steps_written"] - 1        # every step but the one that hit the full disk


def test_invalid_requests_are_rejected_by_id_and_the_others_served_exactly(pair):
    target, draft = pair
    spec = AutoSpec(target, draft, controller="auto", max_batch_size=4)
    good = make_requests(5)
    bad = [GenerationRequest([5, 97, 6], 4, "oov"), GenerationRequest([], 4, "empty"),
           GenerationRequest([5, -1], 4, "negative"), GenerationRequest([7, 8], 0, "no-budget"),
           GenerationRequest([7, 8], 4, "q0"), GenerationRequest([7, 8], 4, "late", arrival_s=float("nan")),
           {"prompt_ids": [3, 4], "request_id": "sampled", "priority": 5}, {"request_id": "no-prompt"},
           {"prompt_ids": "hello", "request_id": "text"}, GenerationRequest([1, 2], 4, ["unhashable"])]
    items = good[:2] + bad[:5] + good[2:] + bad[5:]
    result = spec.serve(items, eos_token_id=-1, progress=False)
    expect = {"oov": "token id 97 at position 1, outside the vocabulary (0..96)", "empty": "is empty",
              "negative": "token id -1 at position 1", "no-budget": "max_new_tokens=0",
              "q0": "repeats an earlier request's id", "late": "arrival_s=nan", "sampled": "['priority']",
              "no-prompt": "has no prompt_ids", "text": "must be a list of token ids", 14: "must be an int or a str"}
    assert set(result.rejected) == set(expect)
    for rid, words in expect.items():
        assert words in result.rejected[rid] and repr(rid) in result.rejected[rid]
    assert result.error is None and result.unfinished == []
    assert [r.output_ids for r in result.results] == [reference(target, q) for q in good]


def test_generate_refuses_a_token_outside_the_vocabulary_before_compute(pair):
    target, _ = pair
    spec = AutoSpec(target, "ngram")
    with pytest.raises(ValueError, match=r"prompt 1 has token id 120 at position 2, outside the vocabulary \(0..96\)"):
        spec.generate(torch.tensor([[3, 4, 5], [6, 7, 120]]), max_new_tokens=4)
    assert spec.memory.num_written == 0


def test_all_requests_invalid_returns_every_rejection_and_no_steps(pair):
    spec = AutoSpec(pair[0], "ngram")
    result = spec.serve([[], [500]], max_new_tokens=4, progress=False)
    assert sorted(result.rejected) == [0, 1] and result.results == [] and result.records == []


class InterruptFromSink:
    """A sink that delivers a real SIGINT (Python's KeyboardInterrupt) while its `at`-th record is written."""

    def __init__(self, at):
        self.at, self.n = at, 0

    def write(self, record):
        self.n += 1
        if self.n == self.at:
            import signal
            signal.raise_signal(signal.SIGINT)

    def close(self):
        pass


def test_keyboard_interrupt_returns_what_finished_and_the_next_call_is_exact(pair, tmp_path):
    target, draft = pair
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=3, sinks=[InterruptFromSink(7)],
                    run_name="ctrl-c", runs_dir=tmp_path)
    reqs = make_requests(9)
    assert_partial(spec.serve(reqs, eos_token_id=-1, progress=False), reqs, target, "KeyboardInterrupt")
    assert_next_call_exact(spec, target)
    spec.close()
    assert len(read_steps(tmp_path / "ctrl-c" / "steps.jsonl")) == spec.memory.num_written - 1


class InterruptMidStep:
    """A controller that asks another thread to interrupt the main thread 2 ms into step `at`,
    so the KeyboardInterrupt lands inside drafting, verification or the cache updates."""
    name = "interrupt-mid-step"

    def __init__(self, at):
        self.at = at

    def choose(self, ctx):
        if ctx.step == self.at:
            threading.Timer(0.002, _thread.interrupt_main).start()
        return 4

    def observe(self, record):
        pass

    def scores(self, ctx):
        return {}


def test_keyboard_interrupt_mid_step_leaves_the_engine_exact(pair, tmp_path):
    target, draft = pair
    spec = AutoSpec(target, draft, controller=InterruptMidStep(5), max_batch_size=3, run_name="mid",
                    runs_dir=tmp_path)
    reqs = make_requests(12, budget=30)
    result = spec.serve(reqs, eos_token_id=-1, progress=False)
    assert result.error == "KeyboardInterrupt" and result.unfinished
    spec.controller = AutoSpec(target, draft, controller="fixed:4").controller
    assert_next_call_exact(spec, target)
    spec.close()
    read_steps(tmp_path / "mid" / "steps.jsonl")                 # strict: raises on a half line


def test_generate_after_a_failed_generate_is_exact(pair):
    target, draft = pair
    spec = AutoSpec(target, draft, controller=FailAt(3, RuntimeError("controller bug")))
    ids = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    with pytest.raises(RuntimeError, match="controller bug"):
        spec.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1, pad_token_id=0)
    ref = target.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(spec.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1, pad_token_id=0), ref)


def test_records_are_held_in_a_bounded_window_while_the_summary_counts_every_step(pair, tmp_path):
    target, draft = pair
    spec = AutoSpec(target, draft, controller="fixed:2", max_batch_size=3, records_window=5, run_name="all",
                    runs_dir=tmp_path)
    results = [spec.serve(make_requests(6, seed=s), eos_token_id=-1, progress=False) for s in range(3)]
    steps = sum(r.summary["steps"] for r in results)
    assert steps > 15 and len(spec.records) == 5 and spec.memory.num_written == steps
    assert spec.summary()["steps"] == steps                         # incremental, not over the window
    prefill_tokens = sum(len(r.results) for r in results)          # each request's first token comes from its prefill
    assert spec.summary()["num_emitted_tokens"] == sum(r.num_output_tokens for r in results) - prefill_tokens
    assert all(len(r.records) <= 5 for r in results)
    spec.close()
    assert len(read_steps(tmp_path / "all" / "steps.jsonl")) == steps   # the full log is on disk
