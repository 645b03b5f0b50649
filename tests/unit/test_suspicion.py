"""Declaring a member dead from its peers' suspicion: the same answer on every node, enough
votes, fresh ones, and never both sides of a cut between two nodes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from durable.cluster.membership import Member
from durable.cluster.suspicion import declared_dead

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
LEASE_S = 3.0


def members(*ids: str) -> dict[str, Member]:
    return {node_id: Member(node_id, {"w": f"http://{node_id}"}) for node_id in ids}


def fresh(*voters: str, age_s: float = 0.5) -> dict[str, datetime]:
    return {voter: NOW - timedelta(seconds=age_s) for voter in voters}


def test_two_members_that_cannot_reach_a_third_declare_it_dead_one_cannot() -> None:
    live = members("a", "b", "c")
    assert declared_dead(live, {"c": fresh("a", "b")}, NOW, LEASE_S) == {"c"}
    assert declared_dead(live, {"c": fresh("a")}, NOW, LEASE_S) == set()  # one slow view is not enough


def test_stale_suspicion_and_votes_of_non_members_do_not_count() -> None:
    live = members("a", "b", "c")
    assert declared_dead(live, {"c": fresh("a", "b", age_s=LEASE_S + 1)}, NOW, LEASE_S) == set()
    assert declared_dead(live, {"c": fresh("a", "gone")}, NOW, LEASE_S) == set()
    assert declared_dead(live, {"c": fresh("c", "a")}, NOW, LEASE_S) == set()  # nobody votes for itself


def test_two_nodes_cut_from_each_other_lose_exactly_one_the_same_on_both_sides() -> None:
    live = members("a", "b")
    assert declared_dead(live, {"a": fresh("b"), "b": fresh("a")}, NOW, LEASE_S) == {"b"}


def test_a_host_cut_off_from_two_others_goes_and_its_own_suspicions_do_not_take_them_along() -> None:
    """Three workers on each of three hosts; host 3 cannot reach hosts 1 and 2, nor they it."""
    live = members(*(f"h{h}-{w}" for h in (1, 2, 3) for w in ("api", "gw", "pay")))
    far = [f"h3-{w}" for w in ("api", "gw", "pay")]
    near = [f"h{h}-{w}" for h in (1, 2) for w in ("api", "gw")]
    suspicions = {node: fresh(*near) for node in far}
    suspicions.update({node: fresh(*far) for node in near})
    assert declared_dead(live, suspicions, NOW, LEASE_S) == set(far)
