"""Every error Changeover raises on purpose.

    ChangeoverError
    ├── InvalidInput        the request or the files are wrong; fix them and retry
    │   ├── UnsafePath      a path that could escape its tree (absolute, "..", link out, not UTF-8)
    │   └── UnsupportedPatchMethod  a patch made by a method this client cannot apply
    ├── NotFound            the named thing does not exist
    ├── Conflict            the request is fine but the current state forbids it
    │   └── ImageLocked     an outstanding diff analysis holds the image
    ├── AuthError           no token, a bad or expired one (401)
    │   └── Forbidden       a valid token whose scope does not allow this (403)
    ├── IntegrityError      bytes that do not match the hash that vouches for them
    │   └── UntrustedMetadata  signed metadata that is tampered, rolled back, expired or mixed
    ├── RemoteError         the other side (server, mirror) failed or could not be reached
    └── DiskError           the local disk refused a write (full, read-only, permissions)

Callers branch on these types, never on messages. Each carries the facts a user needs
as attributes, and its message says what to do about it. The HTTP API maps the tree to
status codes in one place (``control.app``), the CLI to exit codes (``cli.output``).
"""

from __future__ import annotations


class ChangeoverError(Exception):
    """Base of every error Changeover raises on purpose."""

    code = "error"

    def __init__(self, message: str, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.facts}


class InvalidInput(ChangeoverError):
    code = "invalid_input"


class UnsafePath(InvalidInput):
    code = "unsafe_path"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unsafe path {path!r}: {reason}", path=path, reason=reason)
        self.path = path
        self.reason = reason


class UnsupportedPatchMethod(InvalidInput):
    """A patch whose method this client does not know (made by a newer publisher): refused
    before any byte of it is applied; the whole file is fetched instead."""

    code = "unsupported_patch_method"

    def __init__(self, method: str, path: str | None = None) -> None:
        where = f" ({path})" if path else ""
        super().__init__(
            f"patch method {method!r} is not one this client can apply{where}:"
            " update the client to use such patches",
            method=method,
            path=path,
        )
        self.method = method
        self.path = path


class NotFound(ChangeoverError):
    code = "not_found"


class Conflict(ChangeoverError):
    code = "conflict"


class ImageLocked(Conflict):
    code = "image_locked"

    def __init__(self, image: str, diff_id: int) -> None:
        super().__init__(
            f"image {image} is locked by diff {diff_id}: accept or reject it first",
            image=image,
            diff_id=diff_id,
        )
        self.image = image
        self.diff_id = diff_id


class AuthError(ChangeoverError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class IntegrityError(ChangeoverError):
    code = "integrity"

    def __init__(self, what: str, expected: str, got: str) -> None:
        super().__init__(
            f"{what}: expected sha256 {expected}, got {got}",
            what=what,
            expected=expected,
            got=got,
        )
        self.expected = expected
        self.got = got


class UntrustedMetadata(IntegrityError):
    code = "untrusted_metadata"

    def __init__(self, message: str) -> None:  # no hash pair: the signature is what failed
        ChangeoverError.__init__(self, message)
        self.expected = ""
        self.got = ""


class RemoteError(ChangeoverError):
    code = "remote"


class DiskError(ChangeoverError):
    code = "disk"


class Interrupted(ChangeoverError):
    """A player paused or cancelled an update: what arrived is kept for the next run."""

    code = "interrupted"
