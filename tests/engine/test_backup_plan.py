"""The planner's page ranges for a layer with a base (docs/FORMAT.md 7.3), without I/O: they never
overlap and cover every page, whatever the table did since the layers that drew them."""
from __future__ import annotations

import pytest

from engine.backup.plan import _ranges_after
from engine.backup.walsum import Quiet, WalStart, confirm_start
from engine.format.manifest import Chunk, TableEntry


def parent(ranges, pages):
    return TableEntry(1, "public", "t", "r", "binary", ["id"], pages=pages, heap=True,
                      chunks=[Chunk(i, range=list(r)) for i, r in enumerate(ranges)])


def assert_partition(ranges):
    """Consecutive, non-overlapping, from page 0, the last one open-ended."""
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    for (lo, hi), (nlo, _) in zip(ranges, ranges[1:]):
        assert lo < hi == nlo, ranges


@pytest.mark.parametrize("ranges, parent_pages, pages", [
    ([[0, 8], [8, 16], [16, None]], 21, 21),      # unchanged size
    ([[0, 8], [8, 16], [16, None]], 21, 40),      # grew
    ([[0, 8], [8, 16], [16, None]], 6, 4),        # a VACUUM truncated the table since those ranges
    ([[0, 8], [8, 16], [16, None]], 6, 12),       # ... then it grew again, but not past them
    ([[0, 8], [8, 16], [16, None]], 6, 36),       # ... and past them: new ranges start after them
    ([[0, 8], [8, 16], [16, None]], 6, 17),
    ([[0, None]], 0, 30),                         # an empty table filled
])
def test_ranges_after_a_parent_partition_the_table(ranges, parent_pages, pages):
    got, bases = _ranges_after(parent(ranges, parent_pages), pages, 8)
    assert_partition(got)
    for lo, hi in got:          # a parent chunk is tested on exactly the pages the layer copies
        if lo in bases:
            assert bases[lo][1] == (lo, hi)


def test_wal_summaries_keep_only_closed_ranges_of_logged_tables_without_changed_blocks():
    """What Quiet (docs/FORMAT.md 7.6) lets a layer keep without a scan."""
    q = Quiet(blocks={1: [3, 17], 2: []}, logged={1, 2})
    assert [q.quiet(1, r) for r in [(0, 3), (0, 4), (4, 17), (17, 18), (18, 30)]] == [True, False, True, False, True]
    assert q.quiet(2, (0, 8)) is True
    assert q.quiet(1, (18, None)) is False          # the open tail: the scan decides
    assert q.quiet(3, (0, 8)) is False              # unlogged or truncated: not in `logged`
    assert Quiet("summarize_wal is off", {1: []}, {1}).quiet(1, (0, 8)) is False


def test_a_start_position_holds_only_when_no_older_writer_ran_at_the_snapshot():
    start = WalStart("7", 5, 1, "0/1000", xid=1000)
    assert confirm_start(start, "1000:1005:1000,1001") is start
    assert confirm_start(start, "999:1005:999") is None       # a writer (or prepared xact) below N
    assert confirm_start(None, "1000:1000:") is None
