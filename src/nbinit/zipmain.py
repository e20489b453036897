"""The zipapp's `__main__.py`: bytecode for this interpreter when the archive has it, then nbinit.

A zipapp imports from source and can never write a bytecode cache, so every pod would
compile nbinit and PyYAML at each start (hundreds of milliseconds on a busy node). The
archive carries compiled modules per interpreter under `pyc.<magic>/` (the magic number
changes whenever the bytecode format does); a finder placed before the normal path search
serves them, and any module without a matching entry (another Python, a module left out)
is imported from the archive's sources as before. `__file__`, `__path__` and package data
stay those of the sources, so nothing that reads them changes. `ARCHIVE -m MODULE` runs
a module of nbinit instead of the CLI (see run_module). This file is copied into
the archive as `__main__.py` by nbinit.bundle; it uses nothing newer than Python 3.7 so
an older interpreter still reaches the version check.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 9):  # noqa: UP036 - the check an old Python must reach
    found = "%d.%d" % sys.version_info[:2]  # noqa: UP031 - runs on old interpreters too
    sys.stderr.write("nbinit: error: needs Python 3.9 or newer, this is " + found + "\n")
    sys.exit(1)

import zipimport  # noqa: E402 - after the version check, which must run first

TYPE_CHECKING = False  # typing itself costs a start milliseconds; mypy reads the block
if TYPE_CHECKING:
    from typing import Any, Optional


class BytecodeLoader(zipimport.zipimporter):
    """The archive's own loader for one directory, running compiled code when there is some.

    One per package directory, as zipimport itself makes them, so that everything besides
    the code (sources for tracebacks, is_package, package data) is answered exactly as
    without bytecode.
    """

    def __init__(self, path: str, bytecode_prefix: str) -> None:
        super().__init__(path)
        self.bytecode_prefix = bytecode_prefix

    def __repr__(self) -> str:  # `python -v` shows where each module came from
        return f'<zipimporter object "{self.archive}/{self.bytecode_prefix}/">'

    def compiled(self, fullname: str) -> tuple[Optional[bytes], bool]:
        """The module's .pyc entry for this interpreter (or None), and whether a package."""
        relative = fullname.replace(".", "/")
        for entry, package in ((f"{relative}/__init__.pyc", True), (f"{relative}.pyc", False)):
            try:
                return self.get_data(f"{self.bytecode_prefix}/{entry}"), package
            except OSError:
                continue
        return None, False

    def get_code(self, fullname: str, data: Optional[bytes] = None) -> Any:
        package = False
        if data is None:
            data, package = self.compiled(fullname)
        if data is None:
            return super().get_code(fullname)
        return self.code(fullname, data, package)

    def code(self, fullname: str, data: bytes, package: bool) -> Any:
        """The module's code object from its .pyc entry, named after its source."""
        import _imp
        import marshal

        # The archive is as trusted as this very file: it is the program.
        code = marshal.loads(data[16:])  # noqa: S302 - after the 16-byte header
        # Tracebacks name the source in the archive, where it really is. Not get_filename:
        # zipimport's compiles the source to answer.
        relative = fullname.replace(".", "/") + ("/__init__.py" if package else ".py")
        _imp._fix_co_filename(code, f"{self.archive}/{relative}")  # type: ignore[attr-defined]
        return code

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        spec = module.__spec__
        if isinstance(spec.loader_state, bytes):  # read once, by the finder
            code = self.code(
                spec.name, spec.loader_state, spec.submodule_search_locations is not None
            )
        else:
            code = self.get_code(spec.name)
        exec(code, module.__dict__)  # noqa: S102 - what every import does


class BytecodeFinder:
    """Finds the modules compiled for this interpreter's magic number inside the archive."""

    def __init__(self, archive: str, prefix: str) -> None:
        self.archive = archive
        self.prefix = prefix
        self.loaders: dict[str, BytecodeLoader] = {"": BytecodeLoader(archive, prefix)}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        relative = fullname.replace(".", "/")
        compiled, package = self.loaders[""].compiled(fullname)
        if compiled is None:
            return None
        from importlib.machinery import ModuleSpec

        parent = relative.rpartition("/")[0]
        loader = self.loaders.get(parent)
        if loader is None:
            loader = self.loaders[parent] = BytecodeLoader(f"{self.archive}/{parent}", self.prefix)
        source = f"{relative}/__init__.py" if package else f"{relative}.py"
        spec = ModuleSpec(
            fullname,
            loader,  # type: ignore[arg-type]
            origin=f"{self.archive}/{source}",
            is_package=package,
        )
        spec.has_location = True
        spec.loader_state = compiled
        if package:
            spec.submodule_search_locations = [f"{self.archive}/{relative}"]
        return spec


def use_bytecode(archive: str) -> bool:
    """Serve this Python's bytecode from the archive, when it has some; else change nothing."""
    import importlib.machinery

    magic: bytes = sys.modules["importlib._bootstrap_external"].MAGIC_NUMBER
    prefix = "pyc." + magic.hex()
    try:
        finder = BytecodeFinder(archive, prefix)
        finder.loaders[""].get_data(f"{prefix}/nbinit/__init__.pyc")
    except (OSError, zipimport.ZipImportError):
        return False  # not an archive, or no bytecode for this interpreter: sources it is
    # Before the path search (which would find the sources), after builtin and frozen modules.
    finders = sys.meta_path
    path_search = importlib.machinery.PathFinder
    finders.insert(finders.index(path_search) if path_search in finders else len(finders), finder)
    return True


def run_module(argv: list[str]) -> None:
    """`ARCHIVE -m MODULE [ARGS]`: MODULE as `python -m` runs it (nbinit.runtime.module_command).

    How nbinit starts one of its own modules (the git worker, the marker walk) in a fresh
    interpreter: `python -I -m` cannot find them in the archive, the archive itself can.
    """
    import runpy

    module = argv[2]
    del argv[1:3]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # In a zipapp, __main__ comes from the archive, so its directory part is the archive.
    use_bytecode(__file__.rsplit("/", 1)[0])
    if sys.argv[1:2] == ["-m"] and len(sys.argv) > 2:
        run_module(sys.argv)
        sys.exit(0)

    from nbinit.cli import main

    sys.exit(main())
