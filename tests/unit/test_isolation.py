"""Poison-pill isolation: halve after repeated failures, set aside a record that fails
alone twice, grow back after commits, and pause when records fail alone one after another."""

from __future__ import annotations

from fraudstream.scoring.isolation import Isolation, RecordId


def _batch(start: int, n: int) -> list[RecordId]:
    return [("tx", 0, start + i) for i in range(n)]


def test_the_failing_record_is_found_by_halving_and_set_aside() -> None:
    iso = Isolation(batch_max=8)
    assert iso.failed(_batch(0, 8)) is None  # one failure: just a retry
    assert iso.limit == 8
    found = None
    sizes = []
    while found is None:
        batch = _batch(0, iso.limit)  # the poison is the first record read again
        sizes.append(len(batch))
        found = iso.failed(batch)
    assert found == ("tx", 0, 0)
    assert sizes == [8, 4, 2, 1, 1]
    assert iso.poison == {("tx", 0, 0)}
    iso.committed([("tx", 0, 0)])  # its dead letter committed
    assert iso.poison == set()
    iso.committed(_batch(1, 2))
    assert iso.limit == 4  # grows back by doubling


def test_a_single_failure_between_successes_changes_nothing() -> None:
    iso = Isolation(batch_max=8)
    for start in range(0, 80, 8):
        assert iso.failed(_batch(start, 8)) is None
        iso.committed(_batch(start, 8))
    assert iso.limit == 8
    assert not iso.poison


def test_records_failing_alone_one_after_another_pause_isolation() -> None:
    now = [0.0]
    iso = Isolation(batch_max=1, max_in_a_row=2, pause_s=60, clock=lambda: now[0])
    set_aside = []
    for offset in range(4):
        for _attempt in range(3):
            found = iso.failed(_batch(offset, 1))
            if found is not None:
                set_aside.append(found)
                iso.committed([found])
                break
    assert set_aside == [("tx", 0, 0), ("tx", 0, 1)]  # the third in a row is not a record fault
    assert iso.failed(_batch(9, 1)) is None
    now[0] = 61.0
    iso.failed(_batch(9, 1))
    assert iso.failed(_batch(9, 1)) == ("tx", 0, 9)
