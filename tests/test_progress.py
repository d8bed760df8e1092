"""The progress line of a long case: when it shows, and the pace and time left it promises (through
pytest: tests/test_plugin.py::test_a_case_prints_its_progress_with_pace_and_time_left)."""
from __future__ import annotations

import pytest

from vlmcls.session import Progress, duration


def lines(updates, case="c"):
    """Each (done, total, now) given to one Progress started at 0; the lines it printed."""
    p = Progress(case, 0.0)
    return [line for done, total, now in updates if (line := p.update(done, total, now)) is not None]


def test_a_line_after_10_s_then_every_30_s_and_none_once_done():
    got = lines([(0, 100, 0.0), (10, 100, 9.9), (20, 100, 10.0), (30, 100, 39.9), (40, 100, 40.0), (100, 100, 99.0)])
    assert [line.split(",")[0] for line in got] == ["  c: 20/100 samples after 10 s", "  c: 40/100 samples after 40 s"]


def test_the_pace_leaves_out_the_first_batch_which_carries_the_model_load():
    # the first batch (10 samples) ends at 8 s, model load included; 10 more take 4 s: 2.5 samples/s
    assert lines([(0, 100, 0.0), (10, 100, 8.0), (20, 100, 12.0)]) == [
        "  c: 20/100 samples after 12 s, 2.5 samples/s, about 32 s left"]


def test_rows_from_the_store_count_as_done_but_not_in_the_pace():
    # 40 read back at once; then 10 samples in 5 s after the first fresh batch: 2 samples/s, 40 left
    assert lines([(40, 100, 0.0), (50, 100, 5.0), (60, 100, 10.0)]) == [
        "  c: 60/100 samples after 10 s, 2 samples/s, about 20 s left (40 from the store)"]


def test_no_pace_is_promised_before_a_second_fresh_batch():
    assert lines([(0, 50, 0.0), (8, 50, 11.0)]) == ["  c: 8/50 samples after 11 s"]


@pytest.mark.parametrize("seconds, text", [(45, "45 s"), (89.4, "89 s"), (90, "2 min"), (720, "12 min"),
                                           (89 * 60, "89 min"), (90 * 60, "1 h 30 min"), (3 * 3600 + 300, "3 h 05 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text
