"""A job's client release (seed 002): the default client ranges, and the release itself
only once the servers are done."""

from __future__ import annotations

import pytest

from changeover.content import client_versions
from changeover.control.patchjobs import codec
from changeover.control.patchjobs.actions import DeclareClientRange, ReleaseClient
from changeover.control.patchjobs.client_release import (
    ClientRelease,
    RangeWrite,
    check_body,
    default_ranges,
    refuses,
    refusing,
)
from changeover.control.patchjobs.model import Finish, JobStatus, Method
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

HOUR = 3600.0
RELEASE = ClientRelease(
    image_id=5,
    image="arena-client",
    branch="production",
    version_id=51,
    version_number=3,
    client_version="1.5",
)

# -- the rule ------------------------------------------------------------------------------


def test_new_server_accepts_the_released_client_and_old_server_nothing_newer_than_today() -> None:
    writes = default_ranges({1: None}, {2: None}, released="1.5", current="1.4")
    assert writes == [
        RangeWrite(2, None, "1.5", "accepts the released client 1.5 and every older one"),
        RangeWrite(
            1,
            None,
            "1.4",
            "takes no client newer than 1.4 (the released 1.5 is for the new servers)",
        ),
    ]
    new, old = (w for w in writes)
    # The pair as allocation reads it: the 1.5 client only on the new server, the 1.4
    # client on both (nobody is thrown out of the game to update).
    assert not refuses((new.client_min, new.client_max), "1.5")
    assert not refuses((new.client_min, new.client_max), "1.4")
    assert refuses((old.client_min, old.client_max), "1.5")
    assert not refuses((old.client_min, old.client_max), "1.4")


def test_new_server_keeps_the_old_servers_lowest_client() -> None:
    writes = default_ranges(
        {1: ("1.2", "1.4"), 3: ("1.3", None)}, {2: None}, released="1.5", current="1.4"
    )
    # The old versions declare their own ranges: left alone; the new one takes from 1.2.
    assert writes == [
        RangeWrite(2, "1.2", "1.5", "accepts the released client 1.5 and the old clients from 1.2")
    ]


def test_one_old_server_without_a_lower_bound_leaves_the_new_one_without_one() -> None:
    (new,) = default_ranges({1: ("1.2", "1.4"), 3: None}, {2: None}, "1.5", None)
    assert (new.client_min, new.client_max) == (None, "1.5")


def test_a_declared_range_is_the_operators_and_stays() -> None:
    assert default_ranges({1: ("1.0", "1.4")}, {2: ("1.0", "2.0")}, "1.5", "1.4") == []
    assert refusing({2: ("1.0", "1.4"), 4: ("1.0", "2.0"), 6: None}, "1.5") == [2]


def test_old_servers_are_not_bounded_without_an_older_client() -> None:
    # No branch yet, or it is at (or past) the release already: bounding the old
    # servers would refuse nobody, or the released client itself.
    for current in (None, "1.5", "1.6"):
        writes = default_ranges({1: None}, {2: None}, "1.5", current)
        assert [w.version_id for w in writes] == [2]


def test_a_version_both_old_and_new_is_only_given_the_new_range() -> None:
    # Two profiles of one image version (only the command changed): never bound it below
    # the client it must take.
    writes = default_ranges({1: None}, {1: None}, "1.5", "1.4")
    assert [(w.version_id, w.client_max) for w in writes] == [(1, "1.5")]


def test_client_version_of_a_build_is_its_label_when_that_is_a_version() -> None:
    assert client_versions.of_build(7, "1.4.2") == "1.4.2"
    assert client_versions.of_build(7, "spring-update") == "7"
    assert client_versions.of_build(7, None) == "7"
    assert client_versions.parse("1.4.0") == client_versions.parse("1.4") == (1, 4)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("arena-client", "client_release"),
        ({"image": "c", "branch": "p"}, "client_release.version"),
        ({"image": "c", "branch": "", "version": "3"}, "client_release.branch"),
        ({"image": "c", "branch": "p", "version": "3", "extra": 1}, "client_release"),
        ({"image": "c", "branch": "p", "version": "3", "compat": "yes"}, "client_release.compat"),
    ],
)
def test_a_malformed_client_release_is_refused_naming_the_field(raw: object, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_body(raw)
    assert e.value.facts.get("field") == field


def test_a_client_release_body_is_normalised() -> None:
    assert check_body({"image": "c", "branch": "p", "version": 3}) == {
        "image": "c",
        "branch": "p",
        "version": "3",
        "compat": True,
    }
    assert check_body(None) is None


# -- the planner ---------------------------------------------------------------------------


def test_the_client_is_released_once_after_every_old_server_is_gone() -> None:
    world = World()
    world.add(host="a", leaves=[T0 + 2 * HOUR])
    world.add(host="b")
    run = drive(world, spec_for(Method.BLEED_OFF, client_release=RELEASE))
    assert run.progress.status is JobStatus.COMPLETED
    keys = [a.key for _, a in world.log]
    (declare,) = world.of_kind(DeclareClientRange)
    assert declare == DeclareClientRange(
        "job7/main/client-range/-", (OLD,), (NEW,), 5, "production", "1.5"
    )
    # The ranges come before any new server starts ...
    first_start = min(i for i, k in enumerate(keys) if k.startswith("job7/main/start/"))
    assert keys.index(declare.key) < first_start
    (release,) = world.of_kind(ReleaseClient)
    assert release == ReleaseClient("job7/end/release-client/-", 5, "production", 51, "1.5")
    # ... and the release after the last old server stopped, just before the Finish.
    when = {a.key: t for t, a in world.log}
    last_stop = max(s.at for s in world.stops)
    assert when[release.key] >= last_stop >= T0 + 2 * HOUR
    assert keys.index(release.key) == keys.index("job7/end/finish/-") - 1


@pytest.mark.parametrize("crash_at", [0, 1])
def test_a_crash_around_the_release_releases_it_once(crash_at: int) -> None:
    world = World()
    world.add(host="a", leaves=[T0 + HOUR])

    def crash_after(n: int) -> int | None:
        # The pass that records the release: apply ``crash_at`` of its actions, crash.
        return crash_at if world.stops and not world.of_kind(ReleaseClient) else None

    run = drive(world, spec_for(Method.BLEED_OFF, client_release=RELEASE), crash_after=crash_after)
    assert run.progress.status is JobStatus.COMPLETED
    assert len(world.of_kind(ReleaseClient)) == 1
    assert len(world.of_kind(Finish)) == 1


def test_a_job_that_does_not_complete_releases_nothing() -> None:
    world = World()
    world.add(host="a", leaves=[T0 + HOUR])
    world.broken_versions = {NEW}
    run = drive(world, spec_for(Method.BLEED_OFF, client_release=RELEASE))
    assert run.progress.status is JobStatus.ROLLED_BACK
    assert world.of_kind(ReleaseClient) == []
    assert "the client arena-client/production was not released" in run.progress.reason


def test_compat_off_declares_no_range_but_still_releases() -> None:
    world = World()
    world.add(host="a")
    release = ClientRelease(5, "arena-client", "production", 51, 3, "1.5", compat=False)
    drive(world, spec_for(Method.FORCED, client_release=release))
    assert world.of_kind(DeclareClientRange) == []
    assert len(world.of_kind(ReleaseClient)) == 1


def test_a_job_with_nothing_to_move_releases_the_client_at_once() -> None:
    run = drive(World(), spec_for(Method.ROLLING, client_release=RELEASE))
    assert run.progress.status is JobStatus.COMPLETED
    kinds = [type(a).__name__ for _, d in run.decisions for a in d.actions]
    assert kinds == ["DeclareClientRange", "ReleaseClient", "Finish"]


def test_the_new_actions_round_trip_through_the_outbox() -> None:
    for a in (
        DeclareClientRange("k1", (1, 3), (2,), 5, "production", "1.5"),
        ReleaseClient("k2", 5, "production", 51, "1.5"),
    ):
        assert codec.action_from_dict(codec.action_to_dict(a)) == a
    assert ClientRelease.from_dict(RELEASE.to_dict()) == RELEASE
