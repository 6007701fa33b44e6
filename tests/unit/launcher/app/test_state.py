"""The launcher window's view-model: what each widget shows, decided without Qt."""

from __future__ import annotations

from changeover.launcher.app.state import BranchState, Phase, view
from changeover.launcher.engine import Available, Installed, ProgressEvent

V1 = Installed(image="game", branch="production", version=1, label="1.0.0", manifest="m1")
SAME = Available(1, "1.0.0", "m1", up_to_date=True, download_bytes=0, total_bytes=900)
NEWER = Available(2, "1.1.0", "m2", up_to_date=False, download_bytes=300, total_bytes=950)
FRESH = Available(1, "1.0.0", "m1", up_to_date=False, download_bytes=900, total_bytes=900)


def test_before_anything_is_known_it_is_checking_and_nothing_is_clickable() -> None:
    v = view(BranchState())
    assert v.phase is Phase.CHECKING
    assert not v.play_enabled and not v.verify_enabled and not v.action_enabled


def test_nothing_installed_offers_install_once_the_server_answered() -> None:
    state = BranchState().with_installed(None).check_started()
    assert view(state).phase is Phase.CHECKING
    v = view(state.check_succeeded(FRESH))
    assert v.phase is Phase.NOT_INSTALLED
    assert v.action == "install" and v.action_enabled
    assert not v.play_enabled and not v.verify_enabled
    assert v.installed_version is None and v.available_version == "1.0.0 (version 1)"


def test_up_to_date_is_ready_to_play() -> None:
    v = view(BranchState().with_installed(V1).check_succeeded(SAME))
    assert v.phase is Phase.READY
    assert v.play_enabled and v.verify_enabled
    assert v.action == "none" and not v.progress_visible and v.message is None


def test_update_available_says_how_much_and_still_plays_the_installed_version() -> None:
    v = view(BranchState().with_installed(V1).check_succeeded(NEWER))
    assert v.phase is Phase.UPDATE_AVAILABLE
    assert v.action == "update" and v.action_enabled and v.download_bytes == 300
    assert v.installed_version == "1.0.0 (version 1)"
    assert v.available_version == "1.1.0 (version 2)"
    assert v.play_enabled


def test_play_is_disabled_while_that_branch_updates_and_progress_is_shown() -> None:
    state = BranchState().with_installed(V1).check_succeeded(NEWER).job_started("sync")
    v = view(state)
    assert v.phase is Phase.UPDATING and v.progress_visible and v.progress_busy
    assert not v.play_enabled and not v.verify_enabled and not v.action_enabled
    assert v.pause_enabled and v.cancel_enabled

    event = ProgressEvent("downloading", 150, 300, bytes_per_s=50.0, eta_s=3.0)
    v = view(state.job_progress(event))
    assert not v.progress_busy and v.progress_permille == 500
    assert (v.done_bytes, v.total_bytes, v.bytes_per_s, v.eta_s) == (150, 300, 50.0, 3.0)
    assert not v.play_enabled

    installing = view(state.job_progress(ProgressEvent("installing")))
    assert installing.progress_busy and not installing.play_enabled


def test_pause_then_resume_or_cancel() -> None:
    running = BranchState().with_installed(V1).check_succeeded(NEWER).job_started("sync")
    running = running.job_progress(ProgressEvent("downloading", 100, 300, 10.0, 20.0))
    paused = running.job_paused()
    v = view(paused)
    assert v.phase is Phase.PAUSED and v.action == "resume" and v.action_enabled
    assert not v.play_enabled, "a paused update is an update in progress"
    assert v.cancel_enabled and not v.pause_enabled
    assert v.progress_visible and v.progress_permille == 333 and v.bytes_per_s == 0.0

    cancelled = view(paused.job_cancelled("cancelled"))
    assert cancelled.phase is Phase.UPDATE_AVAILABLE and cancelled.play_enabled
    assert cancelled.message == "cancelled" and not cancelled.message_is_error

    resumed = view(paused.job_started("sync"))
    assert resumed.phase is Phase.UPDATING and not resumed.play_enabled


def test_offline_with_an_install_plays_it() -> None:
    state = BranchState().with_installed(V1).check_failed("unreachable", unreachable=True)
    v = view(state)
    assert v.phase is Phase.OFFLINE and v.play_enabled and v.verify_enabled
    assert v.action == "none" and v.available_version is None
    assert v.message == "unreachable" and v.message_is_error


def test_offline_with_nothing_installed_offers_nothing() -> None:
    v = view(BranchState().with_installed(None).check_failed("unreachable", unreachable=True))
    assert v.phase is Phase.OFFLINE
    assert not v.play_enabled and not v.action_enabled and not v.verify_enabled


def test_back_online_clears_the_offline_message() -> None:
    state = BranchState().with_installed(V1).check_failed("unreachable", unreachable=True)
    v = view(state.check_started().check_succeeded(SAME))
    assert v.phase is Phase.READY and v.message is None


def test_a_refusal_is_an_error_and_the_install_still_plays() -> None:
    state = BranchState().with_installed(V1).check_failed("no branch beta", unreachable=False)
    v = view(state)
    assert v.phase is Phase.ERROR and v.message == "no branch beta" and v.play_enabled


def test_a_failed_update_keeps_the_installed_version_playable() -> None:
    state = BranchState().with_installed(V1).check_succeeded(NEWER).job_started("sync")
    v = view(state.job_failed("No space left on device"))
    assert v.phase is Phase.ERROR and v.message_is_error
    assert v.play_enabled and v.action == "update" and v.action_enabled
    assert not v.progress_visible


def test_verify_and_repair_blocks_play_until_done() -> None:
    state = BranchState().with_installed(V1).check_succeeded(SAME).job_started("repair")
    v = view(state)
    assert v.phase is Phase.VERIFYING and not v.play_enabled and not v.pause_enabled
    assert v.cancel_enabled
    done = view(state.job_succeeded("Repaired 1 file(s)."))
    assert done.phase is Phase.READY and done.play_enabled and done.message == "Repaired 1 file(s)."


def test_a_check_while_updating_does_not_hide_the_update() -> None:
    state = BranchState().with_installed(V1).check_succeeded(NEWER).job_started("sync")
    v = view(state.check_started().check_succeeded(NEWER))
    assert v.phase is Phase.UPDATING and not v.play_enabled


def test_an_update_queued_behind_another_branch_waits_then_runs() -> None:
    state = BranchState().with_installed(None).check_succeeded(FRESH)
    waiting = state.job_started("sync", waiting=True)
    v = view(waiting)
    assert v.phase is Phase.WAITING and v.progress_visible and v.progress_busy
    assert not v.play_enabled and not v.pause_enabled and v.cancel_enabled
    running = view(waiting.job_progress(ProgressEvent("checking")))
    assert running.phase is Phase.UPDATING and running.pause_enabled


def test_a_client_the_servers_refuse_cannot_play_until_it_is_updated() -> None:
    why = "The servers no longer accept version 1.0.0: update before playing."
    refused = BranchState().with_installed(V1).check_succeeded(NEWER, refused=why)
    v = view(refused)
    assert v.phase is Phase.UPDATE_REQUIRED
    assert not v.play_enabled
    assert v.action == "update" and v.action_enabled
    assert v.message == why and v.message_is_error

    # An error of the update says more than the refusal; the refusal stays.
    failed = refused.job_started("sync").job_failed("disk full")
    assert view(failed).message == "disk full" and not view(failed).play_enabled

    # Updated: the refusal was for the old client; the next check accepts the new one.
    updated = refused.job_started("sync").job_succeeded()
    assert view(updated).play_enabled
    assert view(updated.check_succeeded(SAME)).phase is Phase.READY


def test_refused_with_no_newer_version_yet_says_so_and_offers_no_update() -> None:
    v = view(BranchState().with_installed(V1).check_succeeded(SAME, refused="refused"))
    assert v.phase is Phase.UPDATE_REQUIRED
    assert v.action == "none" and not v.play_enabled and v.message == "refused"
