"""The high-water-mark rule as a table: no database, only values in and the decision out."""

import pytest

from posswarm.sales.marks import advance, covers, later


@pytest.mark.parametrize(
    ("mark", "stored_after", "expected"),
    [
        (0, [], 0),  # nothing stored yet
        (0, [1, 2, 3], 3),  # a contiguous run from the start
        (0, [2, 3], 0),  # sale 1 missing: the first gap holds the mark at 0
        (2, [4, 5], 2),  # sale 3 missing
        (2, [3, 5, 6], 3),  # moves up to the gap, not over it
        (5, [6], 6),  # one more
        (7, [9, 10, 11], 7),
    ],
)
def test_advance_moves_over_a_contiguous_run_and_stops_at_the_first_gap(mark, stored_after, expected):
    assert advance(mark, stored_after) == expected


def test_advance_reads_no_further_than_the_first_gap():
    consumed = []

    def seqs():
        for seq in (3, 4, 6, 7):
            consumed.append(seq)
            yield seq

    assert advance(2, seqs()) == 4
    assert consumed == [3, 4, 6]


@pytest.mark.parametrize(
    ("mark", "seq", "expected"),
    [(None, 1, False), (0, 1, False), (3, 3, True), (3, 2, True), (3, 4, False)],
)
def test_covers(mark, seq, expected):
    assert covers(mark, seq) is expected


@pytest.mark.parametrize(
    ("held", "offered", "expected"),
    [(None, 4, 4), (2, 4, 4), (4, 2, 4), (4, 4, 4)],
)
def test_a_mark_never_goes_back(held, offered, expected):
    assert later(held, offered) == expected
