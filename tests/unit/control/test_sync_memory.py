"""``fleet.quiet.SyncMemory``'s account of hosts heard from: a host whose sync we are still
answering is not silent, but only the agent we last answered for it counts as the host
(anyone else's sync proves nothing until ``hosts.sync`` has checked it)."""

from __future__ import annotations

import pytest

from changeover.control.fleet.quiet import SyncMemory
from changeover.errors import Conflict


def test_a_known_agent_is_heard_while_its_sync_is_answered() -> None:
    memory = SyncMemory()
    with memory.calling(1, "agent-a", arrived=100.0):
        pass  # answered: agent-a now holds host 1, as far as this process knows
    assert memory.heard(since=100.0) == {1}
    assert memory.heard(since=100.5) == set()
    with memory.calling(1, "agent-a", arrived=90.0):  # arrived long ago, still answering
        assert memory.heard(since=10_000.0) == {1}
    assert memory.heard(since=100.5) == set(), "heard only while answering, after that as of"


def test_an_unknown_or_refused_agent_is_not_heard_before_it_is_answered() -> None:
    memory = SyncMemory()
    with memory.calling(2, "stranger", arrived=50.0):
        assert memory.heard(since=0.0) == set()
    assert memory.heard(since=50.0) == {2}
    with pytest.raises(Conflict), memory.calling(2, "stranger", arrived=60.0):
        raise Conflict("another agent holds the host")
    with memory.calling(2, "stranger", arrived=70.0):
        assert memory.heard(since=65.0) == set(), "a refused agent is unknown again"
    with memory.calling(2, "other", arrived=80.0):
        assert memory.heard(since=75.0) == set(), "and so is any other agent"


def test_overlapping_syncs_of_one_host_keep_it_heard_until_the_last_is_answered() -> None:
    memory = SyncMemory()
    with memory.calling(3, "a", arrived=1.0):
        pass
    first = memory.calling(3, "a", arrived=2.0)
    second = memory.calling(3, "a", arrived=3.0)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert memory.heard(since=1_000.0) == {3}
    second.__exit__(None, None, None)
    assert memory.heard(since=1_000.0) == set()


def test_a_sync_cut_short_keeps_the_agent_known() -> None:
    """A request that failed for another reason (the agent gave up waiting, the database
    was away) says nothing against the agent: it is still the host's."""
    memory = SyncMemory()
    with memory.calling(4, "a", arrived=1.0):
        pass
    with pytest.raises(TimeoutError), memory.calling(4, "a", arrived=2.0):
        raise TimeoutError
    with memory.calling(4, "a", arrived=3.0):
        assert memory.heard(since=1_000.0) == {4}


def test_answering_counts_the_known_agents_syncs_in_flight() -> None:
    memory = SyncMemory()
    for host in (1, 2):
        with memory.calling(host, "a", arrived=1.0):
            pass  # known from now on
    assert memory.answering() == 0
    with memory.calling(1, "a", arrived=2.0), memory.calling(1, "a", arrived=2.1):
        with memory.calling(2, "a", arrived=2.2), memory.calling(9, "stranger", arrived=2.3):
            assert memory.answering() == 3  # the stranger's proves nothing yet
        assert memory.answering() == 2
    assert memory.answering() == 0
