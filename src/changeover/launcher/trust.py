"""Fetching signed targets (branch pointers, manifests) through python-tuf's client.

The first run pins a root: the one given with ``--root`` (shipped with the launcher), or
else version 1 fetched from the server (trust on first use, stated in the README). From
then on the cached root is the anchor and every refresh walks root versions, so key
rotations are followed and forged metadata is refused. TUF's errors are translated here:
a failed check is ``UntrustedMetadata``, a failed download ``RemoteError``.
"""

from __future__ import annotations

from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from urllib3.exceptions import HTTPError as TransportError

from changeover.errors import NotFound, RemoteError, UntrustedMetadata
from changeover.launcher.fetch import http_pool

MAX_ROOT_BYTES = 512 << 10
"""A root role lists a few keys: one bigger than this is a hostile server's."""


class TrustedTargets:
    def __init__(self, base_url: str, cache_dir: Path, root: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.metadata_dir = cache_dir / "metadata"
        self.targets_dir = cache_dir / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        if root is None and not (self.metadata_dir / "root.json").exists():
            root = self._first_root()
        try:
            self.updater = Updater(
                str(self.metadata_dir),
                self.base_url + "/metadata/",
                str(self.targets_dir),
                self.base_url + "/targets/",
                bootstrap=root,
            )
        except tuf_errors.RepositoryError as e:
            raise UntrustedMetadata(f"the pinned root metadata is not valid: {e}") from e
        self._refreshed = False

    def _first_root(self) -> bytes:
        url = self.base_url + "/metadata/1.root.json"
        try:
            r = http_pool(30.0).request("GET", url, preload_content=False)
            if r.status != 200:
                raise RemoteError(f"cannot fetch {url}: HTTP {r.status}")
            data = r.read(MAX_ROOT_BYTES + 1)
        except TransportError as e:
            raise RemoteError(f"cannot fetch {url}: {e}") from e
        if len(data) > MAX_ROOT_BYTES:
            raise UntrustedMetadata(f"{url} is larger than {MAX_ROOT_BYTES} bytes: not a root")
        return data

    def refresh(self) -> None:
        try:
            self.updater.refresh()
        except tuf_errors.DownloadLengthMismatchError as e:
            # More bytes than the signed length: tampering, not a network fault.
            raise UntrustedMetadata(f"{self.base_url} served an oversized file: {e}") from e
        except tuf_errors.DownloadError as e:
            raise RemoteError(f"cannot fetch metadata from {self.base_url}: {e}") from e
        except tuf_errors.RepositoryError as e:
            raise UntrustedMetadata(
                f"metadata from {self.base_url} refused ({type(e).__name__}): {e}"
            ) from e
        self._refreshed = True

    def fetch(self, path: str) -> bytes:
        """The verified bytes of a target, from the local cache when already held."""
        if not self._refreshed:
            self.refresh()
        try:
            info = self.updater.get_targetinfo(path)
            if info is None:
                raise NotFound(f"{path} is not published at {self.base_url}")
            local = self.updater.find_cached_target(info)
            if local is None:
                local = self.updater.download_target(info)
        except tuf_errors.DownloadLengthMismatchError as e:
            # More bytes than the signed length: tampering, not a network fault.
            raise UntrustedMetadata(f"{self.base_url} served an oversized file: {e}") from e
        except tuf_errors.DownloadError as e:
            raise RemoteError(f"cannot fetch {path}: {e}") from e
        except tuf_errors.RepositoryError as e:
            raise UntrustedMetadata(f"{path} refused ({type(e).__name__}): {e}") from e
        return Path(local).read_bytes()
