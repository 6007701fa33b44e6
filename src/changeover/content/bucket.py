"""The content tree in an S3-compatible bucket, beside the local disk.

With a bucket (``CHANGEOVER_CONTENT_BUCKET=s3://name/prefix``), every file the store
writes under ``content/`` goes to the bucket under the same path, before the call that
wrote it returns; the local directory becomes a cache, filled from the bucket on a miss.
Launchers and agents fetch from the bucket's public URL (or a CDN in front of it) exactly
as from the control plane's ``/content``: same paths, same bytes.

No partial object is ever visible under its final name: S3 shows an object only once its
``PUT`` or its multipart upload's ``CompleteMultipartUpload`` succeeded (files over
``MULTIPART_FROM`` go in parts). Order is the callers': every object a signed metadata
file names is written before the metadata (``content.trust``), ``timestamp.json`` last.

boto3 (``pip install 'changeover[s3]'``) is imported only when a bucket is configured.
Credentials and region come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` …);
``CHANGEOVER_S3_ENDPOINT`` names a server other than AWS (MinIO, Ceph, R2 …).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from changeover.errors import ChangeoverError, InvalidInput, RemoteError

MULTIPART_FROM: Final = 16 << 20
PRIVATE: Final = "_private/"
"""The bucket's folder for private files, beside the content prefix: ``_private/<prefix>``."""
PART_BYTES: Final = 16 << 20


@dataclass(frozen=True)
class BucketConfig:
    name: str
    prefix: str = ""
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint: str | None = None) -> BucketConfig:
        """``s3://name`` or ``s3://name/prefix``.

        Raises:
            InvalidInput: not such a URL.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise InvalidInput(f"content bucket {url!r} must look like s3://name/prefix")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "", endpoint or None)


class Bucket:
    """The few calls the store makes, over boto3's S3 client."""

    def __init__(self, config: BucketConfig) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as e:
            raise ChangeoverError(
                "a content bucket needs boto3: pip install 'changeover[s3]'"
            ) from e
        self.config = config
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=config.endpoint,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_FROM, multipart_chunksize=PART_BYTES
        )

    def key(self, rel: str) -> str:
        """The object's key: content paths below the prefix, private ones (``private``)
        beside it."""
        if rel.startswith(PRIVATE):
            return f"{PRIVATE}{self.config.prefix}{rel.removeprefix(PRIVATE)}"
        return self.config.prefix + rel

    @staticmethod
    def private(rel: str) -> str:
        """The path of a private file (an input to publishing, never served): it goes
        beside the content tree, not in it, so that a policy making the tree public
        leaves it out."""
        return f"{PRIVATE}{rel}"

    def put_file(self, rel: str, path: Path) -> None:
        """Upload ``path`` as ``rel``; visible whole or not at all."""
        self._call(
            "upload",
            rel,
            self._client.upload_file,
            str(path),
            self.config.name,
            self.key(rel),
            Config=self._transfer,
        )

    def fetch(self, rel: str, dest: Path) -> bool:
        """Download ``rel`` to ``dest`` (by a temporary file renamed into place); False if
        the bucket has no such object."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            try:
                self._call(
                    "download",
                    rel,
                    self._client.download_file,
                    self.config.name,
                    self.key(rel),
                    tmp,
                    Config=self._transfer,
                )
            except _Missing:
                return False
            os.replace(tmp, dest)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def exists(self, rel: str) -> bool:
        try:
            self._call(
                "look up", rel, self._client.head_object, Bucket=self.config.name, Key=self.key(rel)
            )
        except _Missing:
            return False
        return True

    def delete(self, rel: str) -> None:
        self._call(
            "delete", rel, self._client.delete_object, Bucket=self.config.name, Key=self.key(rel)
        )

    def _call(self, what: str, rel: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise _Missing from None
            raise RemoteError(
                f"cannot {what} {rel} in bucket {self.config.name}: {code or e}"
            ) from e
        except BotoCoreError as e:
            raise RemoteError(f"cannot {what} {rel} in bucket {self.config.name}: {e}") from e


class _Missing(Exception):
    pass
