"""How this nbinit runs: installed as a package, or from the one-file zipapp.

Kept apart from nbinit.bundle (the build tool, with argparse and zipfile) because the
root process imports it on every start that starts the git worker.
"""

from __future__ import annotations

import sys


def running_archive() -> str:
    """The zipapp this nbinit runs from, or "" when it is installed as a package."""
    import nbinit

    loader = nbinit.__spec__.loader if nbinit.__spec__ else None
    return str(getattr(loader, "archive", ""))


def module_command(module: str) -> list[str]:
    """`python -I -m MODULE` for a module of this nbinit, from the zipapp too (args follow).

    A fresh interpreter knows nothing of the zipapp (and -I ignores PYTHONPATH), so it runs
    the archive itself: its __main__ (nbinit.zipmain) takes `-m MODULE` as python does,
    after serving this Python's bytecode from the archive (the git worker would otherwise
    compile nbinit.git at every start).
    """
    archive = running_archive()
    if archive:
        return [sys.executable, "-I", archive, "-m", module]
    return [sys.executable, "-I", "-m", module]


def package_location() -> str:
    """The sys.path entry nbinit imports from: the zipapp, or the directory above the package."""
    import os

    import nbinit

    return running_archive() or os.path.dirname(os.path.dirname(os.path.abspath(nbinit.__file__)))


def foreign_module_command(interpreter: list[str], module: str) -> list[str]:
    """Run MODULE's main() on another interpreter, not isolated (args follow).

    The interpreter runs the directory nbinit.foreign by path, which imports MODULE with
    nbinit's location on sys.path only meanwhile. Not `-I`: the server keeps the image's
    own PYTHONPATH and user site, as it would if started directly. The module must import
    only the standard library.
    """
    return [*interpreter, f"{package_location()}/nbinit/foreign", module]
