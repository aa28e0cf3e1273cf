import json
import math

import pytest

from autospec import StepContext, StepRecord
from tests.conftest import make_record


def test_derived_fields_follow_from_the_measured_ones():
    r = make_record(batch_size=4, spec_len=3, accepted_per_pos=(3, 2, 1), draft_time_s=0.002, verify_time_s=0.008)
    assert r.step_time_s == pytest.approx(0.010)
    assert r.num_emitted_tokens == 6 + 4          # accepted + one bonus token per row
    assert r.goodput_tps == pytest.approx(1000.0)
    assert r.acceptance_rate == pytest.approx(6 / 12)
    assert r.tokens_per_target_pass == pytest.approx(10 / 4)
    assert r.trials_per_pos() == (4, 3, 2)


def test_rows_that_stopped_inside_their_drafts_emit_no_bonus_token():
    r = make_record(batch_size=4, spec_len=2, accepted_per_pos=(2, 1), num_bonus_tokens=3)
    assert r.num_emitted_tokens == 3 + 3


def test_plain_decoding_has_no_acceptance_rate_and_serialises_it_as_null():
    r = make_record(spec_len=0, accepted_per_pos=())
    assert math.isnan(r.acceptance_rate)
    assert json.loads(r.to_json())["acceptance_rate"] is None


def test_json_round_trip_keeps_every_field():
    r = make_record(oracle_goodput_tps=123.0, extra={"note": "x"})
    line = json.loads(r.to_json())
    for name in ("step", "batch_size", "spec_len", "num_draft_tokens", "num_accepted_tokens", "accepted_per_pos",
                 "draft_time_s", "verify_time_s", "controller", "step_time_s", "num_emitted_tokens",
                 "goodput_tps", "acceptance_rate", "tokens_per_target_pass"):
        assert name in line
    assert StepRecord.from_dict(line) == r


def test_a_line_that_is_not_a_step_record_is_named():
    with pytest.raises(ValueError, match="missing field.*spec_len"):
        StepRecord.from_dict({"step": 1, "batch_size": 2})


def test_records_and_contexts_are_frozen():
    with pytest.raises(Exception):
        make_record().spec_len = 5  # type: ignore[misc]
    with pytest.raises(Exception):
        StepContext(step=0, batch_size=1, max_spec_len=4).batch_size = 2  # type: ignore[misc]


def test_verified_width_and_rows_drafted_default_to_a_full_draft_and_round_trip():
    r = make_record(batch_size=4, spec_len=3)
    assert r.verified_width == 4 and r.rows_drafted_per_pos == (4, 4, 4)
    partial = make_record(batch_size=4, spec_len=3, verified_width=3, rows_drafted_per_pos=(4, 2, 0))
    back = StepRecord.from_dict(json.loads(partial.to_json()))
    assert back.verified_width == 3 and back.rows_drafted_per_pos == (4, 2, 0)


def test_a_log_line_from_before_the_typed_fields_reads_them_from_extra():
    line = make_record(batch_size=4, spec_len=3).to_dict()
    del line["verified_width"], line["rows_drafted_per_pos"]
    line["extra"] = {"verify_q": 2, "rows_drafted_per_pos": [3, 0, 0]}
    r = StepRecord.from_dict(line)
    assert r.verified_width == 2 and r.rows_drafted_per_pos == (3, 0, 0)
