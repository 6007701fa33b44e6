"""Signed metadata for the content tree, with python-tuf (the repository side).

What is signed: every *target* a launcher or agent trusts directly — branch pointers
(``branches/<image>/<branch>.json``) and manifests (``manifests/<id>.json``). Blobs and
patches need no signature of their own: each is checked against a hash in a signed
manifest before use. The four TUF roles give the guarantees the launcher relies on:
targets (what the files are), snapshot (which targets version is current: no mix-and-match),
timestamp (freshness: no freeze past its expiry), root (which keys count: rotation).
Versions only grow, so a client refuses an older branch state (rollback).

Layout in the content tree (consistent snapshots, so every file but one is immutable)::

    metadata/1.root.json, 2.root.json …     root history (clients walk it to rotate keys)
    metadata/<v>.targets.json, <v>.snapshot.json
    metadata/timestamp.json                 the only file that changes in place
    targets/<dir>/<sha256>.<name>           target files, named by hash

Private keys live in ``keys/`` beside the store (mode 0600), never in the content tree.
Current signed metadata is kept in ``keys/state/`` so publishing needs no network.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from changeover.content.files import atomic_write
from changeover.content.manifest import check_path
from changeover.content.trust_policy import TrustPolicy
from changeover.errors import InvalidInput, UntrustedMetadata

ROLES = ("root", "targets", "snapshot", "timestamp")
MUTABLE_PATHS = ("metadata/timestamp.json",)
"""Paths that change in place: the only ones a CDN must purge after a publish."""

_SERIALIZER = JSONSerializer(compact=True)


class TrustRepo:
    """Keys and signed metadata of one content tree; safe to use from several processes."""

    def __init__(
        self,
        content_dir: Path,
        keys_dir: Path,
        policy: TrustPolicy | None = None,
        clock: Callable[[], float] = time.time,
        on_written: Callable[[str], None] | None = None,
        read_published: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.content = content_dir
        self.read_published = read_published
        """The bytes of a published path (under the content tree), wherever it lives (the
        store's bucket, through its cache), or None: how a replica learns what another
        one signed (``adopt_published``)."""
        self.on_written = on_written
        """Told the path (under the content tree) of each public file once written: the
        store puts it in its bucket, if it has one (``content.bucket``). Targets come
        before the metadata naming them, ``timestamp.json`` last, as they are written."""
        self.keys_dir = keys_dir
        self.policy = policy or TrustPolicy()
        self.clock = clock
        self.metadata_dir = content_dir / "metadata"

    # -- public operations -----------------------------------------------------------------

    def ensure_initialised(self) -> None:
        """Create keys and version-1 metadata of every role, once: unless metadata was
        published already (by another replica, into a shared bucket), which is then taken
        as the current state instead, and no key is made.

        Raises:
            UntrustedMetadata: metadata was published, but cannot be read back whole.
        """
        with self._locked():
            if (self._state_dir / "root.json").exists():
                return
            if self._adopt():
                return
            if self.read_published is not None and self.read_published("metadata/1.root.json"):
                raise UntrustedMetadata(
                    "signed metadata was published, but this replica cannot read it back"
                    " whole: it will not make new keys over it"
                )
            self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            signers = {role: self._new_key(role) for role in ROLES}
            root: Metadata[Root] = Metadata(Root(expires=self._expires("root")))
            for role, signer in signers.items():
                root.signed.add_key(signer.public_key, role)
            targets: Metadata[Targets] = Metadata(Targets(expires=self._expires("targets")))
            self._sign_and_write("root", root)
            self._sign_and_write("targets", targets)
            self._write_snapshot_and_timestamp(targets.signed.version, None)

    def publish(self, changes: Mapping[str, bytes | None]) -> list[str]:
        """Add, replace (bytes) or remove (None) targets; sign new metadata versions.

        Returns the content paths that changed in place (to purge from a CDN), or an
        empty list if nothing changed.

        Raises:
            UnsafePath: a target path that could escape the tree.
        """
        for path in changes:
            check_path(path)
        self.ensure_initialised()
        with self._locked():
            targets = self._load("targets", Targets)
            changed = False
            for path, data in changes.items():
                if data is None:
                    changed |= targets.signed.targets.pop(path, None) is not None
                    continue
                info = TargetFile.from_data(path, data, ["sha256"])
                if targets.signed.targets.get(path) == info:
                    continue
                self._write_target(info, data)
                targets.signed.targets[path] = info
                changed = True
            if not changed:
                return []
            self._bump("targets", targets)
            self._write_snapshot_and_timestamp(targets.signed.version, None)
            return list(MUTABLE_PATHS)

    def refresh(self) -> list[str]:
        """Re-sign every role past half its lifetime (call it periodically)."""
        self.ensure_initialised()
        with self._locked():
            now = self._now()
            stale = {
                role
                for role in ROLES
                if self._load(role, _ROLE_TYPES[role]).signed.expires
                - timedelta(seconds=self.policy.expiry_s(role) / 2)
                <= now
            }
            if not stale:
                return []
            if "root" in stale:
                root = self._load("root", Root)
                self._bump("root", root)
            if "targets" in stale:
                targets = self._load("targets", Targets)
                self._bump("targets", targets)
            targets_version = self._load("targets", Targets).signed.version
            self._write_snapshot_and_timestamp(targets_version, stale)
            return list(MUTABLE_PATHS)

    def rotate(self, role: str) -> None:
        """Replace a role's key: a new root version lists the new key, signed by the old
        root key (and the new one, when rotating root), so clients follow the change.
        """
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        self.ensure_initialised()
        with self._locked():
            root = self._load("root", Root)
            old_root_signer = self._signer("root")
            for keyid in list(root.signed.roles[role].keyids):
                root.signed.revoke_key(keyid, role)
            self._key_path(role).rename(self._key_path(role).with_suffix(".pem.old"))
            new = self._new_key(role)
            root.signed.add_key(new.public_key, role)
            root.signed.version += 1
            root.signed.expires = self._expires("root")
            root.signatures.clear()
            root.sign(old_root_signer, append=True)
            if role == "root":
                root.sign(new, append=True)
            self._write("root", root)
            self._key_path(role).with_suffix(".pem.old").unlink()
            targets = self._load("targets", Targets)
            self._bump("targets", targets)
            self._write_snapshot_and_timestamp(targets.signed.version, None)

    def adopt_published(self) -> bool:
        """Take the newest published metadata as the current state if it is newer than this
        replica's (another replica signed since it last did); whether it was.

        Called by a replica that starts to lead: signing on from a stale state would
        publish versions that launchers already saw with other contents.

        Raises:
            UntrustedMetadata: the published metadata is incomplete or does not verify.
        """
        with self._locked():
            return self._adopt()

    def can_sign(self) -> bool:
        """Whether this replica holds every role's key, as the current root lists them: a
        replica without keys (or with keys rotated away since) must not lead."""
        try:
            # The newest root anyone published: keys rotated through another replica
            # leave this one's out of date.
            published = self.read_published and self.read_published("metadata/root.json")
            root = Metadata.from_bytes(published) if published else self._load("root", Root)
            for role in ROLES:
                keyid = self._signer(role).public_key.keyid
                if keyid not in root.signed.roles[role].keyids:
                    return False
        except (FileNotFoundError, ValueError):
            return False
        return True

    def root_bytes(self, version: int = 1) -> bytes:
        """A root version, as a launcher would pin it on first use."""
        self.ensure_initialised()
        return (self.metadata_dir / f"{version}.root.json").read_bytes()

    def current_targets(self) -> dict[str, str]:
        """Target path → sha256 of what is published now."""
        self.ensure_initialised()
        targets = self._load("targets", Targets)
        return {p: t.hashes["sha256"] for p, t in targets.signed.targets.items()}

    # -- internals -------------------------------------------------------------------------

    def _adopt(self) -> bool:
        """``adopt_published``, with the lock held."""
        if self.read_published is None:
            return False
        raw: dict[str, bytes] = {}
        if (stamp := self.read_published("metadata/timestamp.json")) is None:
            return False
        timestamp: Metadata[Timestamp] = Metadata.from_bytes(stamp)
        try:
            if self._load("timestamp", Timestamp).signed.version >= timestamp.signed.version:
                return False
        except FileNotFoundError:
            pass
        snapshot_path = f"metadata/{timestamp.signed.snapshot_meta.version}.snapshot.json"
        paths = {"timestamp": "metadata/timestamp.json", "snapshot": snapshot_path}
        raw["timestamp"] = stamp
        for role in ("snapshot", "root"):
            path = paths.get(role, "metadata/root.json")
            if (data := self.read_published(path)) is None:
                raise UntrustedMetadata(f"published metadata {path} is missing")
            raw[role] = data
        snapshot: Metadata[Snapshot] = Metadata.from_bytes(raw["snapshot"])
        targets_path = f"metadata/{snapshot.signed.meta['targets.json'].version}.targets.json"
        if (data := self.read_published(targets_path)) is None:
            raise UntrustedMetadata(f"published metadata {targets_path} is missing")
        raw["targets"] = data
        root: Metadata[Root] = Metadata.from_bytes(raw["root"])
        try:
            root.verify_delegate("root", root)
            for role in ("targets", "snapshot", "timestamp"):
                root.verify_delegate(role, Metadata.from_bytes(raw[role]))
        except Exception as e:
            raise UntrustedMetadata(f"published metadata does not verify: {e}") from e
        self._state_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            atomic_write(self._state_dir / f"{role}.json", raw[role])
        return True

    @property
    def _state_dir(self) -> Path:
        return self.keys_dir / "state"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One writer at a time, across threads and processes sharing the tree.
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.keys_dir / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC).replace(microsecond=0)

    def _expires(self, role: str) -> datetime:
        return self._now() + timedelta(seconds=self.policy.expiry_s(role))

    def _key_path(self, role: str) -> Path:
        return self.keys_dir / f"{role}.pem"

    def _new_key(self, role: str) -> CryptoSigner:
        signer = CryptoSigner(Ed25519PrivateKey.generate())
        path = self._key_path(role)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private_bytes)
        return signer

    def _signer(self, role: str) -> CryptoSigner:
        key = load_pem_private_key(self._key_path(role).read_bytes(), None)
        return CryptoSigner(key)

    def _load(self, role: str, kind: type[Any]) -> Metadata[Any]:
        md: Metadata[Any] = Metadata.from_bytes((self._state_dir / f"{role}.json").read_bytes())
        if not isinstance(md.signed, kind):
            raise InvalidInput(f"keys/state/{role}.json does not hold {role} metadata")
        return md

    def _bump(self, role: str, md: Metadata[Any]) -> None:
        md.signed.version += 1
        md.signed.expires = self._expires(role)
        self._sign_and_write(role, md)

    def _sign_and_write(self, role: str, md: Metadata[Any]) -> None:
        md.signatures.clear()
        md.sign(self._signer(role))
        self._write(role, md)

    def _write(self, role: str, md: Metadata[Any]) -> None:
        data = md.to_bytes(_SERIALIZER)
        version = md.signed.version
        # Public, immutable copy first; the private "current" pointer last, so a crash
        # in between leaves the old state current and the new file merely unused.
        if role == "timestamp":
            self._write_public("metadata/timestamp.json", data)
        else:
            self._write_public(f"metadata/{version}.{role}.json", data)
        if role == "root":
            self._write_public("metadata/root.json", data)
        atomic_write(self._state_dir / f"{role}.json", data)

    def _write_public(self, rel: str, data: bytes) -> None:
        atomic_write(self.content / rel, data)
        if self.on_written is not None:
            self.on_written(rel)

    def _write_snapshot_and_timestamp(self, targets_version: int, stale: set[str] | None) -> None:
        try:
            snapshot = self._load("snapshot", Snapshot)
        except FileNotFoundError:
            snapshot = Metadata(Snapshot(expires=self._expires("snapshot")))
            snapshot.signed.version = 0
        if (
            snapshot.signed.meta["targets.json"].version != targets_version
            or stale is None
            or ("snapshot" in stale)
        ):
            snapshot.signed.meta["targets.json"] = MetaFile(version=targets_version)
            self._bump("snapshot", snapshot)
        try:
            timestamp = self._load("timestamp", Timestamp)
        except FileNotFoundError:
            timestamp = Metadata(Timestamp(expires=self._expires("timestamp")))
            timestamp.signed.version = 0
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        self._bump("timestamp", timestamp)

    def _write_target(self, info: TargetFile, data: bytes) -> None:
        directory, _, name = info.path.rpartition("/")
        digest = info.hashes["sha256"]
        rel = f"{directory}/{digest}.{name}" if directory else f"{digest}.{name}"
        if not (self.content / "targets" / rel).exists():
            self._write_public(f"targets/{rel}", data)


_ROLE_TYPES: dict[str, type[Any]] = {
    "root": Root,
    "targets": Targets,
    "snapshot": Snapshot,
    "timestamp": Timestamp,
}
