"""A meta-path finder that refuses to import a given set of modules.

Used to prove that a part of the code base (the launcher) can be imported where those
modules do not exist: ``fcntl``, ``pwd`` … are absent on Windows, and the player's side has
no business loading the control plane, its database or its web framework. A refused
import raises ``ModuleNotFoundError``, as on a machine that lacks the module, so code that
probes for an optional module (``try: import fcntl``) still works.

Run as a script, it blocks the modules named by ``--block`` (each with its submodules) and
then imports the modules named by ``--import``; it exits 1 and names the module whose
import pulled a blocked one in, with the import chain.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import sys
import traceback
from collections.abc import Iterable, Sequence
from types import ModuleType


class ImportBlocker(importlib.abc.MetaPathFinder):
    """Refuses ``names`` and every submodule of them; records each refusal."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.refused: list[str] = []

    def blocks(self, fullname: str) -> bool:
        return any(fullname == n or fullname.startswith(n + ".") for n in self.names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if self.blocks(fullname):
            self.refused.append(fullname)
            raise ModuleNotFoundError(f"import of {fullname} is blocked", name=fullname)
        return None

    def install(self) -> None:
        """First on the meta path; forget any blocked module already imported (by the
        interpreter's start-up), so that importing it again goes through this finder."""
        for name in list(sys.modules):
            if self.blocks(name):
                del sys.modules[name]
        sys.meta_path.insert(0, self)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", action="append", default=[])
    parser.add_argument("--import", dest="modules", action="append", default=[])
    args = parser.parse_args(argv)
    blocker = ImportBlocker(args.block)
    blocker.install()
    failed = 0
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            failed += 1
            print(f"FAILED {module}:", file=sys.stderr)
            traceback.print_exc()
    # A refusal swallowed by a ``try: import x except ImportError`` is fine (that code
    # works without x); one that reached us is a failure, reported above.
    loaded = sorted(m for m in sys.modules if blocker.blocks(m))
    if loaded:
        print(f"FAILED: blocked modules were loaded anyway: {loaded}", file=sys.stderr)
        failed += 1
    print(f"imported {len(args.modules) - failed} of {len(args.modules)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
