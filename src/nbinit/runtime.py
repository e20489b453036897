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


# A fresh interpreter knows nothing of the zipapp (and -I ignores PYTHONPATH): put it first
# on sys.path, use the archive's bytecode for this Python as its __main__ does (the git
# worker would otherwise compile nbinit.git at every start), then run the module as `-m` would.
_RUN_FROM_ARCHIVE = (
    "import runpy, sys; archive = sys.argv.pop(1); sys.path.insert(0, archive); "
    "from nbinit.zipmain import use_bytecode; use_bytecode(archive); "
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


def module_command(module: str) -> list[str]:
    """`python -I -m MODULE` for a module of this nbinit, from the zipapp too (args follow)."""
    archive = running_archive()
    if archive:
        return [sys.executable, "-I", "-c", _RUN_FROM_ARCHIVE.format(module=module), archive]
    return [sys.executable, "-I", "-m", module]


# For another Python (the image's): nbinit's location goes on sys.path only long enough to
# import the module, so nothing else from it (requests, yaml) shadows the image's packages.
_IMPORT_FROM = (
    "import sys; p = sys.argv.pop(1); sys.path.insert(0, p); "
    "import {module} as m; sys.path.remove(p); sys.exit(m.main())"
)


def package_location() -> str:
    """The sys.path entry nbinit imports from: the zipapp, or the directory above the package."""
    import os

    import nbinit

    return running_archive() or os.path.dirname(os.path.dirname(os.path.abspath(nbinit.__file__)))


def foreign_module_command(interpreter: list[str], module: str) -> list[str]:
    """Run MODULE's main() on another interpreter, not isolated (args follow).

    Not `-I`: the server keeps the image's own PYTHONPATH and user site, as it would if
    started directly. The module must import only the standard library.
    """
    return [*interpreter, "-c", _IMPORT_FROM.format(module=module), package_location()]
