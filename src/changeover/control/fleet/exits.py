"""How an instance's last process ended, as the API shows it and as events and pages say it.

The agent reports each end (``agent.instances``: exited by itself while being stopped,
killed with SIGKILL after the stop timeout, or crashed while meant to run; its exit code or
signal; why it was being stopped); ``hosts.sync`` keeps it in the ``exit_*`` columns.
"""

from __future__ import annotations

from typing import Any

from changeover.control.fleet.models import Instance


def exit_record(row: Instance) -> dict[str, Any] | None:
    """``{"how", "code", "signal", "reason", "at"}``; None while no process of it ended."""
    if row.exit_how is None:
        return None
    return {
        "how": row.exit_how,
        "code": row.exit_code,
        "signal": row.exit_signal,
        "reason": row.exit_reason,
        "at": row.exited_at,
    }


def describe_exit(row: Instance) -> str:
    """``exited by itself with code 0 after it was asked to stop (stop)`` and the like."""
    status = (
        f"code {row.exit_code}"
        if row.exit_code is not None
        else (row.exit_signal or "an unknown status")
    )
    if row.exit_how == "crashed":
        return f"crashed ({status}) while meant to run"
    why = f" ({row.exit_reason})" if row.exit_reason else ""
    if row.exit_how == "killed":
        return f"killed with SIGKILL after its stop timeout{why}"
    return f"exited by itself with {status} after it was asked to stop{why}"


__all__ = ["describe_exit", "exit_record"]
