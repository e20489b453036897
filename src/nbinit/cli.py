"""Command line: parse arguments, call one function per command. No logic lives here."""

from __future__ import annotations

import sys

from nbinit import __version__
from nbinit.errors import EXIT_FATAL, EXIT_USAGE

TYPE_CHECKING = False  # `typing` costs `nbinit ready`, run every few seconds, 2-3 ms; mypy reads it
if TYPE_CHECKING:
    import argparse
    from typing import NoReturn, Optional


def _parser_class() -> type[argparse.ArgumentParser]:
    """Imported only to parse: `nbinit start` and `nbinit ready` never pay for argparse."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse exits 2 on a usage error; nbinit's contract (and sysexits) says 64."""

        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            sys.stderr.write(f"nbinit: error: {message}\n")
            sys.exit(EXIT_USAGE)

    return _Parser


def build_parser() -> argparse.ArgumentParser:
    import argparse

    _Parser = _parser_class()
    parser = _Parser(
        prog="nbinit",
        description="Startup agent for JupyterHub notebook images.",
    )
    parser.add_argument("--version", action="version", version=f"nbinit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    start = commands.add_parser(
        "start", help="entrypoint: config, user, repos, gpu, hooks, then exec CMD as the user"
    )
    start.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        help="-- CMD ARGS... (default: "
        "start-singleuser.sh, start-singleuser.py or jupyterhub-singleuser)",
    )
    commands.add_parser("poststart", help="Kubernetes postStart: user-level steps, always exit 0")

    check = commands.add_parser("check", help="image doctor: can this image serve JupyterHub?")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    check.add_argument("--hub-version", help="the JupyterHub version the image must work with")

    show = commands.add_parser("status", help="the last run: each step, outcome, duration")
    show.add_argument("--json", action="store_true", help="print the status file as JSON")

    cfg = commands.add_parser("config", help="validate or show the config")
    cfg_commands = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    cfg_commands.required = True
    validate = cfg_commands.add_parser("validate", help="check a config file or URL")
    validate.add_argument("target", metavar="FILE|URL")
    validate.add_argument("--dotfile", action="store_true", help="check it as a user dotfile")
    cfg_commands.add_parser("show", help="the effective config and where each part came from")

    repos = commands.add_parser("repos", help="git notebook repositories")
    repo_commands = repos.add_subparsers(
        dest="repos_command", metavar="ACTION", parser_class=_Parser
    )
    repo_commands.required = True
    sync = repo_commands.add_parser("sync", help="clone and update your repos now")
    sync.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")

    commands.add_parser(
        "ready",
        help="readiness probe: exit 0 once the server (or the failure page) accepts "
        "connections, else 1 with why",
    )

    gpu = commands.add_parser("gpu", help="the GPU report")
    gpu.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def parse_start_command(words: list[str]) -> Optional[list[str]]:
    """`start -- CMD ...`: the words after `--`; None for the default server command."""
    if not words:
        return None
    if words[0] != "--":
        if words[0].startswith("-"):
            _usage(f"start: unknown option {words[0]!r} (put the command after `--`)")
        return words
    if len(words) == 1:
        _usage("start: `--` must be followed by the command to run")
    return words[1:]


def _usage(message: str) -> NoReturn:
    sys.stderr.write(f"nbinit: error: {message}\n")
    sys.exit(EXIT_USAGE)


# Commands every pod runs (ready every few seconds) that end with nothing left to do: the
# interpreter's teardown (freeing every module, a last collection) would cost each 5-15 ms,
# so run as the program they end with os._exit once their output is flushed.
QUICK_EXIT = (["poststart"], ["ready"])


def main(argv: Optional[list[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    code = _main(words)
    if argv is None and words in QUICK_EXIT:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """os._exit(code) once stdout and stderr are flushed; if flushing fails, return, and the
    normal exit reports it as before."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110 - the normal exit reports it
        return
    os._exit(code)


def _main(words: list[str]) -> int:
    try:
        return _dispatch(words)
    except Exception as exc:  # noqa: BLE001 - STYLE: a traceback only with the debug switch
        import os

        if os.environ.get("NBINIT_DEBUG", "") not in ("", "0"):
            raise
        sys.stderr.write(
            f"nbinit: internal error ({type(exc).__name__}): this is a bug in nbinit; "
            "NBINIT_DEBUG=1 shows the traceback\n"
        )
        return EXIT_FATAL


def _dispatch(words: list[str]) -> int:
    if words[:1] == ["start"] and not {"-h", "--help"} & set(words[1:2]):
        # The entrypoint path, at every pod start: argparse would add ~10 ms and its REMAINDER
        # handling adds nothing that parse_start_command does not already check.
        from nbinit import commands

        return commands.start(parse_start_command(words[1:]))
    if words == ["poststart"]:  # every pod's postStart hook: the same shortcut
        from nbinit import commands

        return commands.poststart()
    if words == ["ready"]:  # every few seconds in every pod: no argparse, no pipeline
        from nbinit import readiness

        return readiness.main()
    args = build_parser().parse_args(words)
    from nbinit import commands

    if args.command == "start":
        return commands.start(parse_start_command(args.cmd))
    if args.command == "poststart":
        return commands.poststart()
    if args.command == "check":
        return commands.check(as_json=args.json, hub_version=args.hub_version)
    if args.command == "status":
        return commands.show_status(as_json=args.json)
    if args.command == "config" and args.config_command == "validate":
        return commands.config_validate(args.target, dotfile=args.dotfile)
    if args.command == "config":
        return commands.config_show()
    if args.command == "ready":
        from nbinit import readiness

        return readiness.main()
    if args.command == "repos":
        return commands.repos_sync(dry_run=args.dry_run)
    return commands.gpu_report(as_json=args.json)
