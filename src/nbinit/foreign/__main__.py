"""Run a module of nbinit on another Python (the image's): `PYTHON DIR MODULE [ARGS]`.

DIR is this directory, inside the installed package or inside the zipapp: Python runs a
directory's (or a zip's sub-directory's) `__main__.py` with it first on sys.path, so the
interpreter finds nbinit without being told where it is (runtime.foreign_module_command
builds the line). nbinit's location goes on sys.path only while MODULE is imported, then
it and this directory leave again: nothing of nbinit's (its requests, its yaml) shadows
the image's packages, and unlike `python -c` no working directory lands on sys.path.
MODULE must import only the standard library. Python 3.7 syntax: the image's interpreter
may be older than nbinit's.
"""

import importlib
import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    location = os.path.dirname(os.path.dirname(here))
    if sys.path and os.path.abspath(sys.path[0]) == here:  # put there to run this file
        del sys.path[0]
    if len(sys.argv) < 2:
        sys.stderr.write("nbinit: usage: python " + here + " MODULE [ARGS...]\n")
        return 64
    name, args = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, location)
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(location)
    sys.argv = [name, *args]
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
