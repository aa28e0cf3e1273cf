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
    assert r.acceptance_length == pytest.approx(10 / 4)
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
                 "goodput_tps", "acceptance_rate", "acceptance_length"):
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
