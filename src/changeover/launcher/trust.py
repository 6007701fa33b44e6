"""Fetching signed targets (branch pointers, manifests) through python-tuf's client.

The first run pins a root: the one given with ``--root`` (shipped with the launcher), or
else version 1 fetched from the server (trust on first use, stated in the README). From
then on the cached root is the anchor and every refresh walks root versions, so key
rotations are followed and forged metadata is refused.

python-tuf downloads through :class:`_TufFetcher`, which is our ``Fetcher``: metadata gets
the same size bound, deadline (from the length the signed metadata gives, else python-tuf's
upper bound for the role), retries and rate limit as content. TUF's errors are translated
here into words a player can act on: a failed check is ``UntrustedMetadata``, a failed
download ``RemoteError``; no library class name reaches a message.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from changeover.errors import ChangeoverError, NotFound, RemoteError, UntrustedMetadata
from changeover.launcher.fetch import Fetcher, RateLimit

MAX_ROOT_BYTES = 512 << 10
"""A root role lists a few keys: one bigger than this is a hostile server's."""

REFUSALS: list[tuple[type[tuf_errors.RepositoryError], str]] = [
    (tuf_errors.UnsignedMetadataError, "is not signed by the keys this launcher trusts"),
    (
        tuf_errors.BadVersionNumberError,
        "is older than what this launcher has already seen (a rollback)",
    ),
    (tuf_errors.ExpiredMetadataError, "has expired (the server's metadata is out of date)"),
    (tuf_errors.LengthOrHashMismatchError, "does not match the length and hash it is signed with"),
]
"""What each of python-tuf's refusals means, in a player's words (subclasses first)."""
NO_RETRY = (
    "; retrying will not help until the server publishes valid signed metadata"
    " (if this persists, tell the publisher)"
)


def refusal(e: tuf_errors.RepositoryError) -> str:
    for kind, words in REFUSALS:
        if isinstance(e, kind):
            return words
    return "is not valid signed metadata"


class TrustedTargets:
    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        root: bytes | None = None,
        *,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.metadata_dir = cache_dir / "metadata"
        self.targets_dir = cache_dir / "targets"
        self.scratch = cache_dir / "partial"
        for d in (self.metadata_dir, self.targets_dir, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self.fetcher = fetcher or Fetcher(self.base_url, RateLimit(None))
        self._tuf_fetcher = _TufFetcher(self.fetcher, self.scratch)
        if root is None and not (self.metadata_dir / "root.json").exists():
            root = self._first_root()
        try:
            self.updater = Updater(
                str(self.metadata_dir),
                self.base_url + "/metadata/",
                str(self.targets_dir),
                self.base_url + "/targets/",
                fetcher=self._tuf_fetcher,
                bootstrap=root,
            )
        except tuf_errors.RepositoryError as e:
            raise UntrustedMetadata(
                f"the pinned root metadata was refused: it {refusal(e)} ({e})"
            ) from e
        self._refreshed = False

    def _first_root(self) -> bytes:
        url = self.base_url + "/metadata/1.root.json"
        with tempfile.TemporaryDirectory(dir=self.scratch) as d:
            part = Path(d) / "root"
            try:
                self.fetcher.download_url(
                    url, part, MAX_ROOT_BYTES, name="the server's first signed root (1.root.json)"
                )
            except RemoteError as e:
                if e.facts.get("oversized"):
                    raise UntrustedMetadata(
                        f"{url} is larger than {MAX_ROOT_BYTES} bytes: not a root"
                    ) from e
                raise wrong_address(e, self.base_url) from e
            return part.read_bytes()

    def refresh(self) -> None:
        try:
            self.updater.refresh()
        except (tuf_errors.DownloadError, tuf_errors.RepositoryError) as e:
            raise wrong_address(
                _translated(e, f"the signed metadata of {self.base_url}"), self.base_url
            ) from e
        self._refreshed = True

    def fetch(self, path: str, *, what: str | None = None) -> bytes:
        """The verified bytes of a target, from the local cache when already held.
        ``what`` is how errors call it (default: its path)."""
        what = what or path
        if not self._refreshed:
            self.refresh()
        try:
            info = self.updater.get_targetinfo(path)
            if info is None:
                raise NotFound(f"{what} is not published at {self.base_url} ({path})")
            local = self.updater.find_cached_target(info)
            if local is None:
                self._tuf_fetcher.naming = what
                try:
                    local = self.updater.download_target(info)
                finally:
                    self._tuf_fetcher.naming = None
        except (tuf_errors.DownloadError, tuf_errors.RepositoryError) as e:
            raise _translated(e, what) from e
        return Path(local).read_bytes()


NOT_FOUND_STATUS = frozenset({403, 404, 410})
"""What a web server answers for a path it does not serve."""


def wrong_address(e: ChangeoverError, base_url: str) -> ChangeoverError:
    """``e`` reworded when the server answered that it has no signed metadata at all
    (HTTP 404 for the timestamp or the first root): the server is reachable but the
    content URL is not where it publishes. That is a configuration problem, not being
    offline, and retrying will not help; the status stays in the facts (``status``), and
    ``misconfigured`` says so."""
    if not isinstance(e, RemoteError) or e.facts.get("status") not in NOT_FOUND_STATUS:
        return e
    return RemoteError(
        f"not found at {base_url}: {e.message}; the content URL in the launcher's"
        " configuration is wrong, or the server does not publish there; retrying will not"
        " help",
        **{**e.facts, "misconfigured": True},
    )


def _translated(e: Exception, what: str) -> ChangeoverError:
    """python-tuf's error ``e`` about ``what`` as ours, in a player's words."""
    cause = e.__cause__
    if isinstance(e, tuf_errors.DownloadLengthMismatchError):
        # More bytes than the signed length: tampering, not a network fault.
        return UntrustedMetadata(
            f"{what} was refused: the server sent more than its signed length{NO_RETRY}"
        )
    if isinstance(e, tuf_errors.DownloadError):
        if isinstance(cause, ChangeoverError):
            return cause  # our Fetcher's, already in words
        return RemoteError(f"cannot download {what} from the server ({e})")
    assert isinstance(e, tuf_errors.RepositoryError)
    return UntrustedMetadata(f"{what} was refused: it {refusal(e)} ({e}){NO_RETRY}")


class _TufFetcher(FetcherInterface):
    """python-tuf's downloads, made by our ``Fetcher`` (see the module docstring)."""

    def __init__(self, fetcher: Fetcher, scratch: Path) -> None:
        self.fetcher = fetcher
        self.scratch = scratch
        self.naming: str | None = None
        """What the target being downloaded is, for errors (its URL has a hash prefix)."""

    def _fetch(self, url: str) -> Iterator[bytes]:  # pragma: no cover - download_file is used
        with self.download_file(url, MAX_ROOT_BYTES) as f:
            yield f.read()

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryDirectory(dir=self.scratch) as d:
            part = Path(d) / "download"
            name = self.naming or f"the signed metadata {url.rsplit('/', 1)[-1]}"
            try:
                self.fetcher.download_url(url, part, max_length, name=name)
            except RemoteError as e:
                status = e.facts.get("status")
                if e.facts.get("oversized"):
                    raise tuf_errors.DownloadLengthMismatchError(e.message) from e
                if isinstance(status, int):
                    # python-tuf looks for the next root version until a 403 or 404.
                    raise tuf_errors.DownloadHTTPError(e.message, status) from e
                raise tuf_errors.DownloadError(e.message) from e
            with open(part, "rb") as f:
                yield f
