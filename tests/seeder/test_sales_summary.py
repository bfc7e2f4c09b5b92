"""Central logs one line per period for the batches it took in, with their totals, not a line per batch."""

import logging

import pytest
import structlog
from structlog.testing import capture_logs

from seeder.sales_summary import IngestSummary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def info_level():
    """Lines at info, whatever level a command run earlier in this process configured (and put back after)."""
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    yield
    structlog.configure(**before)


def test_one_line_per_period_carries_the_periods_totals():
    clock = Clock()
    summary = IngestSummary(every_s=10.0, clock=clock)
    with capture_logs() as lines:
        for store in ("S1", "S2", "S1"):
            clock.now += 1
            summary.count(store, 5, 1)
        assert lines == []
        clock.now += 8  # 11 s since the period began: this batch closes it
        summary.count("S3", 2, 0)
        clock.now += 1
        summary.count("S1", 7, 0)  # the next period's first batch
    assert len(lines) == 1
    assert lines[0]["event"] == "sales.ingested"
    assert (lines[0]["batches"], lines[0]["stored"], lines[0]["duplicates"], lines[0]["stores"]) == (4, 17, 3, 3)
