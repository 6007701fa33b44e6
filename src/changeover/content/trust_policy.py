"""How long each signed role stays valid: a plain value, apart from :mod:`trust` so that
the settings (which every command loads) do not import TUF and its signers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrustPolicy:
    """How long each role's signature stays valid; re-signed at half its lifetime."""

    root_expiry_s: float = 365 * 86400
    targets_expiry_s: float = 90 * 86400
    snapshot_expiry_s: float = 7 * 86400
    timestamp_expiry_s: float = 86400

    def expiry_s(self, role: str) -> float:
        value: float = getattr(self, f"{role}_expiry_s")
        return value


__all__ = ["TrustPolicy"]
