"""The checker the cluster test relies on must tell a linearizable history from one that is not."""
from __future__ import annotations

from tests.linearizability import Op, linearizable


def test_sequential_reads_of_the_latest_write_are_linearizable() -> None:
    assert linearizable([Op(0, 1, "write", 1), Op(2, 3, "read", 1), Op(4, 5, "write", 2), Op(6, 7, "read", 2)])


def test_a_stale_read_after_a_completed_write_is_not() -> None:
    assert not linearizable([Op(0, 1, "write", 1), Op(2, 3, "write", 2), Op(4, 5, "read", 1)])


def test_overlapping_operations_may_take_either_order() -> None:
    assert linearizable([Op(0, 10, "write", 1), Op(1, 2, "read", 1), Op(3, 4, "read", None)]) is False
    assert linearizable([Op(0, 10, "write", 1), Op(1, 2, "read", None), Op(3, 4, "read", 1)])


def test_a_read_cannot_go_back_in_time() -> None:
    # two concurrent writes; once a read saw 2, a later read cannot see 1 unless 1 came after 2
    ops = [Op(0, 5, "write", 1), Op(0, 5, "write", 2), Op(6, 7, "read", 2), Op(8, 9, "read", 1)]
    assert not linearizable(ops)


def test_a_write_of_unknown_outcome_may_apply_late_or_never() -> None:
    assert linearizable([Op(0, None, "write", 1), Op(2, 3, "read", None), Op(4, 5, "read", 1)])
    assert linearizable([Op(0, None, "write", 1), Op(2, 3, "read", None)])
    assert not linearizable([Op(0, None, "write", 1), Op(2, 3, "read", 1), Op(4, 5, "read", None)])


def test_a_value_nobody_wrote_is_not_explained() -> None:
    assert not linearizable([Op(0, 1, "write", 1), Op(2, 3, "read", 7)])
