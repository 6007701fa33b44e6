"""``changeover patchjob`` flags, parsed and checked without a server."""

from __future__ import annotations

import pytest

from changeover.cli import patchjob_args as a
from changeover.errors import InvalidInput

NOW = 1_900_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert a.duration_s("--x", text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "5w", "1e9999h", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput, match="--x"):
        a.duration_s("--x", text)


def test_run_time_keeps_the_unit() -> None:
    assert a.run_time("2h") == (2, "hours")
    assert a.run_time("90m") == (90, "minutes")
    assert a.run_time("45") == (45, "seconds")
    assert a.run_time("1.5d") == (1.5, "days")
    with pytest.raises(InvalidInput, match="--max-run-time"):
        a.run_time("two hours")


def test_build_pairs() -> None:
    assert a.build_pair("arena-v1=arena-v2") == {"old": "arena-v1", "new": "arena-v2"}
    for bad in ("arena-v1", "=x", "x=", "a=b=c"):
        with pytest.raises(InvalidInput, match="must read OLD=NEW"):
            a.build_pair(bad)
    with pytest.raises(InvalidInput, match="the same"):
        a.build_pair("a=a")


def test_emails() -> None:
    both = {"email": "ops@example.com", "progress": True, "result": True}
    assert a.email_entry("ops@example.com") == both
    assert a.email_entry("ops@example.com:progress,result") == both
    assert a.email_entry("ops@example.com:result")["progress"] is False
    assert a.email_entry("ops@example.com:progress")["result"] is False
    with pytest.raises(InvalidInput, match="not an e-mail address"):
        a.email_entry("ops")
    with pytest.raises(InvalidInput, match="not weekly"):
        a.email_entry("ops@example.com:weekly")


def test_start_times() -> None:
    assert a.start_time("+10m", NOW) == NOW + 600
    assert a.start_time(str(int(NOW + 3600)), NOW) == NOW + 3600
    iso = "2030-03-17T18:46:40Z"  # 1900000000 + 3600
    assert a.start_time(iso, NOW) == NOW + 3600
    assert a.start_time("2030-03-17T19:46:40+01:00", NOW) == NOW + 3600
    assert a.start_time("2030-03-17T18:46:40", NOW) == NOW + 3600  # UTC when not said
    with pytest.raises(InvalidInput, match="at least 5 minutes"):
        a.start_time("+4m", NOW)
    with pytest.raises(InvalidInput, match="at least 5 minutes"):
        a.start_time(str(int(NOW)), NOW)
    with pytest.raises(InvalidInput, match="ISO 8601"):
        a.start_time("next tuesday", NOW)


def test_amounts_and_shares() -> None:
    assert a.amount("--m", "2") == 2
    assert a.amount("--m", "25%") == "25%"
    with pytest.raises(InvalidInput, match="count"):
        a.amount("--m", "a quarter")
    assert a.share("--s", "10%") == pytest.approx(0.1)
    assert a.share("--s", "0.25") == 0.25
    for bad in ("0", "150%", "x"):
        with pytest.raises(InvalidInput, match="--s"):
            a.share("--s", bad)


def test_methods_by_id_or_name() -> None:
    assert a.method("4") == 4
    assert a.method("bleed-off") == 4
    assert a.method("Rolling update") == 2
    with pytest.raises(InvalidInput, match="unknown method 'sideways'"):
        a.method("sideways")


def test_flags_override_the_file_and_required_fields_are_named() -> None:
    base = {"name": "from file", "environment": "prod", "comments": "keep"}
    body = a.build_body(base, {"name": "flag", "comments": None}, require=False)
    assert body == {"name": "flag", "environment": "prod", "comments": "keep"}
    with pytest.raises(InvalidInput) as e:
        a.build_body(base, {}, require=True)
    assert "--application, --method, --build OLD=NEW, --fleet" in e.value.message
    assert "--name" not in e.value.message


def test_knobs_merge_into_their_group() -> None:
    body: dict[str, object] = {"drain": {"deadline_s": 60}}
    a.merge_knob(body, "drain", "notice_before_s", [30])
    a.merge_knob(body, "rolling", "max_surge", None)
    assert body == {"drain": {"deadline_s": 60, "notice_before_s": [30]}}


def test_client_release_flags() -> None:
    body: dict[str, object] = {}
    a.merge_client_release(body, "arena-client", None, "1.5", None)
    assert body == {
        "client_release": {"image": "arena-client", "version": "1.5", "branch": "production"}
    }
    # Over a --file's release: the flags given win, the rest stays.
    body = {"client_release": {"image": "c", "branch": "beta", "version": "3"}}
    a.merge_client_release(body, None, None, "4", False)
    assert body == {
        "client_release": {"image": "c", "branch": "beta", "version": "4", "compat": False}
    }
    body = {}
    a.merge_client_release(body, None, None, None, None)
    assert body == {}  # no flag: no release
    with pytest.raises(InvalidInput, match="--client-image"):
        a.merge_client_release({}, None, "beta", "1.5", None)
    with pytest.raises(InvalidInput, match="--client-version"):
        a.merge_client_release({}, "c", None, None, None)
