"""Regenerate ``changeover.agones._pb`` from the vendored official protos (``make agones-protos``).

``proto/sdk.proto``, ``proto/alpha.proto`` and ``proto/beta.proto`` are Agones' own files,
unchanged (their version is in ``proto/VERSION``). Their ``google.api`` and OpenAPI options
only describe the REST gateway (which ``changeover.agones.gateway`` implements by hand from
them) and client libraries, and import protos that no Python package ships; they carry
nothing on the wire. So
this script strips those options into a temporary copy and compiles that with grpcio-tools
(a dev dependency), into a package path so the generated modules import each other as
``changeover.agones._pb.…``.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PROTOS = ("sdk.proto", "alpha.proto", "beta.proto")
_IMPORT = re.compile(r'^import "(google/api|protoc-gen-openapiv2)/[^"]+";\n', re.M)
_FIELD_OPTION = re.compile(r"\s*\[\s*\((?:grpc\.gateway|google\.api)\.[^\]]*\]")


def strip_options(text: str) -> str:
    """``text`` without the gateway/OpenAPI imports and ``option (…) = {…};`` blocks."""
    text = _IMPORT.sub("", text)
    text = _FIELD_OPTION.sub("", text)
    out, i = [], 0
    while (start := text.find("option (", i)) != -1:
        brace = text.find("{", start)
        semicolon = text.find(";", start)
        if brace == -1 or semicolon < brace:  # a one-line option without a block
            keep = not text.startswith(("option (google.api", "option (grpc.gateway"), start)
            out.append(text[i : semicolon + 1] if keep else text[i:start])
            i = semicolon + 1
            continue
        depth, j = 0, brace
        while True:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        end = text.find(";", j)
        out.append(text[i:start])
        i = end + 1
    out.append(text[i:])
    return "".join(out)


def main(target: Path = HERE / "_pb") -> int:
    """Compile the protos into ``target`` (by default the package's ``_pb``); 0 on success."""
    from grpc_tools import protoc  # dev only

    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "changeover" / "agones" / "_pb"
        pkg.mkdir(parents=True)
        for name in PROTOS:
            (pkg / name).write_text(strip_options((HERE / "proto" / name).read_text()))
        out = Path(tmp) / "out"
        out.mkdir()
        # The well-known protos (wrappers, field masks) that grpcio-tools ships.
        well_known = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{tmp}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *(f"changeover/agones/_pb/{name}" for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            return 1
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(out / "changeover" / "agones" / "_pb", target)
    (target / "__init__.py").write_text(
        '"""Generated from ../proto by ``make agones-protos``; do not edit."""\n'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
