"""Fork, exit, and exec PROGRAM in the child: `PYTHON -I -S DIR PROGRAM [ARGS]`.

privilege.spawn_detached_as_user starts this directory by path, as the user, as the middle
process of a double fork: it exits at once, so PROGRAM (the git worker) is not nbinit's
child and, once nbinit has exec'd the server, PID 1 (tini) reaps it instead of the server
leaving it a zombie. Run by path, not with -m: a directory inside the zipapp runs the same
way, and with -S nothing but the interpreter's core is loaded. Standard library only,
Python 3.7 syntax.
"""

import os
import sys

if len(sys.argv) < 2:
    sys.stderr.write("nbinit: usage: python -I -S " + os.path.dirname(__file__) + " PROGRAM\n")
    sys.exit(64)
if os.fork():
    os._exit(0)
os.execv(sys.argv[1], sys.argv[1:])
