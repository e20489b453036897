"""Root cannot run git: nothing the root side of nbinit.git imports reaches the git runner.

Root plans the repos (nbinit.git.policy) and starts the worker as the user
(nbinit.git.launcher); the code that starts git (runner) and the code that calls it (repo,
lock, worker) are the worker's alone. Read from the sources, every import counted, the lazy
ones inside functions too, so a future `import` that crosses the line fails here first
(tests/sandbox/test_lazy_imports.py checks a real start's import graph).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbinit

SOURCES = Path(nbinit.__file__).parent
ROOT_SIDE = ("nbinit.git.policy", "nbinit.git.launcher")
USER_SIDE = {
    "nbinit.git.runner",
    "nbinit.git.repo",
    "nbinit.git.gitdir",
    "nbinit.git.lock",
    "nbinit.git.worker",
}


def source(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = SOURCES / relative / "__init__.py"
    return package if package.exists() else SOURCES / relative.with_suffix(".py")


def imports(module: str) -> set[str]:
    """The nbinit modules `module` imports anywhere in its body, with their packages."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source(module).read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from nbinit.git import runner` imports a module, `from nbinit.x import f` a name
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("nbinit") and source(name).exists():
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def closure(start: tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports(module) - seen)
    return seen


def test_the_root_side_never_reaches_the_git_runner():
    reached = closure(ROOT_SIDE)
    assert reached & USER_SIDE == set()
    assert "nbinit.privilege" in reached  # the walk follows imports: it can fail


def test_the_walk_finds_the_runner_from_the_worker():
    assert closure(("nbinit.git.worker",)) >= USER_SIDE
