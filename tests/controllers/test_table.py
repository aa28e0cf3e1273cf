import pytest

from autospec import StepContext
from autospec.controllers import PRESETS, TableController


def choose(c, b):
    return c.choose(StepContext(step=0, batch_size=b, max_spec_len=8))


def test_paper_preset_is_the_papers_table():
    assert PRESETS["paper"] == {1: 7, 2: 6, 4: 4, 8: 4, 16: 3, 32: 1}
    c = TableController()
    assert [choose(c, b) for b in (1, 2, 3, 4, 8, 16, 31, 32, 1000)] == [7, 6, 6, 4, 4, 3, 3, 1, 1]


def test_custom_table_from_a_string():
    c = TableController(table="1=5,64=2")
    assert [choose(c, b) for b in (1, 63, 64, 500)] == [5, 5, 2, 2]


@pytest.mark.parametrize("table, match", [("2=3", "entry for batch size 1"), ("1=9", "spec_len for batch size 1"),
                                          ("huh", "preset"), ("1=2,0=1", "table batch size")])
def test_bad_tables_are_named(table, match):
    with pytest.raises(ValueError, match=match):
        TableController(table=table, max_spec_len=8)
