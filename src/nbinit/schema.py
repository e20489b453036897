"""The config schema (version 1), one section per step, in the JSON Schema subset nbinit checks.

`configs/nbinit.schema.json` is generated from this module (`python -m nbinit.schema`), so
editors and nbinit's own validator read the same rules, and so is docs/config-reference.md
(`python -m nbinit.schema markdown`); tests keep all three in step.
"""

from __future__ import annotations

import json
import sys
from typing import Any

NAME_PATTERN = "^[a-z_][a-z0-9_-]{0,31}$"

REPO_ITEM: dict[str, Any] = {
    "type": "object",
    "description": "A git repository cloned into the home and kept up to date.",
    "properties": {
        "url": {
            "type": "string",
            "minLength": 1,
            "description": "Required: `https://`, `ssh://` or scp-like `git@host:path`.",
        },
        "dest": {
            "type": "string",
            "minLength": 1,
            "description": "Directory relative to the home. Default: the repository's name.",
        },
        "branch": {
            "type": "string",
            "minLength": 1,
            "description": 'Branch to check out (quote numbers: `"3.10"`). '
            "Default: the remote's HEAD.",
        },
        "depth": {
            "type": "integer",
            "minimum": 0,
            "default": 1,
            "description": "Shallow clone depth; 0 means full history.",
        },
        "on_diverge": {
            "enum": ["report", "backup"],
            "default": "report",
            "description": "Upstream rewritten: leave and report, or back up and clone again "
            "(admin config only).",
        },
    },
    "required": ["url"],
    "additionalProperties": False,
}

REPOS: dict[str, Any] = {
    "type": "array",
    "items": REPO_ITEM,
    "maxItems": 100,
    "default": [],
    "description": "Repos cloned into every user's home (a user's `~/.nbinit.yaml` adds their "
    "own).",
}

USER: dict[str, Any] = {
    "type": "object",
    "description": "The user's own account, created when the marker directory exists.",
    "properties": {
        "marker": {
            "type": "string",
            "minLength": 1,
            "default": "/s/{user}/jupyterhub",
            "description": "A real directory here (never a symlink) gives the user their own "
            "account; {user} is JUPYTERHUB_USER.",
        },
        "home": {
            "type": "string",
            "minLength": 1,
            "default": "/home/{user}",
            "description": "The own account's home: created from the skeleton when absent, "
            "kept when present.",
        },
        "group": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Group name for `NB_GID`. Default: the user's name.",
        },
        "extra_groups": {
            "type": "array",
            "items": {"type": "string", "pattern": NAME_PATTERN},
            "default": ["users"],
            "description": "Supplementary groups the user joins, as jovyan is in `users` (a "
            "missing one is a WARNING; a system group only when the baked config lists it).",
        },
        "default_user": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "default": "jovyan",
            "description": "The image's user, who the server runs as when no marker selects the "
            "user's own account (created at start when missing).",
        },
        "uid_min": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2147483647,
            "default": 1000,
            "description": "Lowest `NB_UID`/`NB_GID` accepted.",
        },
        "uid_max": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2147483647,
            "default": 60000,
            "description": "Highest `NB_UID`/`NB_GID` accepted (must be >= `uid_min`; 65534, "
            "65535 never are).",
        },
        "on_uid_mismatch": {
            "enum": ["fail", "use_existing"],
            "default": "fail",
            "description": "The name exists with another UID: fail, or use the existing account.",
        },
        "on_uid_taken": {
            "enum": ["fail", "alias"],
            "default": "fail",
            "description": "The UID belongs to another account: fail, or add a non-unique alias.",
        },
        "chown_home": {
            "enum": ["top", "recursive", "never"],
            "default": "top",
            "description": "An existing home with the wrong owner: fix its top directory, "
            "everything in it (no symlinks, one file system, within the deadline), or nothing.",
        },
        "skeleton": {
            "type": "string",
            "default": "/etc/skel",
            "description": "Copied into a new home (e.g. /home/jovyan); never moved.",
        },
        "shell": {"type": "string", "default": "/bin/bash", "description": "Login shell."},
        "secret_env": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "default": [],
            "description": "Extra environment variables removed before the server and the hooks "
            "start (`NBINIT_CONFIG_TOKEN` and `git.token_env`'s variable always are).",
        },
    },
    "additionalProperties": False,
}

GIT: dict[str, Any] = {
    "type": "object",
    "description": "Policy for every git operation.",
    "properties": {
        "allowed_schemes": {
            "type": "array",
            "items": {"enum": ["https", "http", "ssh", "git", "file"]},
            "default": ["https", "ssh"],
            "description": "Transports allowed for every repo (`ext::`/`fd::` never; `file` "
            "only when listed).",
        },
        "allowed_hosts": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "Hosts user-declared repos may come from (`*.example.org` allowed; "
            "empty: users cannot add repos).",
        },
        "submodules": {
            "type": "boolean",
            "default": False,
            "description": "Also clone and update submodules.",
        },
        "timeout": {
            "type": "number",
            "minimum": 1,
            "default": 60,
            "description": "Seconds for one git operation (its whole process group is killed).",
        },
        "workers": {
            "type": "integer",
            "minimum": 1,
            "maximum": 32,
            "default": 8,
            "description": "Repos synced in parallel, and so the most git connections one pod "
            "opens at once (8 measured fastest on a 2-CPU node; lower it for a small git server).",
        },
        "min_free_mb": {
            "type": "integer",
            "minimum": 0,
            "default": 500,
            "description": "A new clone is skipped (one WARNING) when the home has less free "
            "space; updates still run.",
        },
        "credential_helper": {
            "type": "string",
            "description": "A git credential helper for every sync, e.g. `store --file=/etc/...`.",
        },
        "token_env": {
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "description": "Name of an environment variable holding an https token, offered "
            "only to allowed_hosts and the admin repos' hosts (never put in a URL); removed from "
            "the server's and the hooks' environment.",
        },
        "token_username": {
            "type": "string",
            "minLength": 1,
            "default": "x-access-token",
            "description": "The user name sent with that token.",
        },
        "mirror": {
            "type": "string",
            "pattern": "^/",
            "description": "A read-only directory of bare mirrors (`<mirror>/<host>/<path>`, "
            "as `git clone --mirror URL` leaves them) that new clones borrow objects from "
            "(--reference-if-able, --dissociate), fetching only the difference from the "
            "server. A missing, stale or broken mirror is a WARNING, never a failed clone.",
        },
    },
    "additionalProperties": False,
}

GPU: dict[str, Any] = {
    "type": "object",
    "description": "GPU visibility, decided from device nodes, libcuda, the driver and nvidia-smi.",
    "properties": {
        "require": {
            "enum": [True, False, "auto"],
            "default": "auto",
            "description": "true: no GPU is FATAL (the server never starts); auto: report; "
            "false: skip the GPU step.",
        },
        "timeout": {
            "type": "number",
            "minimum": 0.1,
            "default": 5,
            "description": "Seconds for the nvidia-smi calls together (it hangs on a bad GPU).",
        },
        "frameworks": {
            "type": "array",
            "items": {"enum": ["torch", "jax", "tensorflow"]},
            "default": [],
            "description": "Import these in the image's python3 and ask each how many GPUs it "
            "sees (only when a GPU is present).",
        },
        "frameworks_timeout": {
            "type": "number",
            "minimum": 0.1,
            "default": 30,
            "description": "Seconds for all framework probes together (within the deadline).",
        },
    },
    "additionalProperties": False,
}

FETCH: dict[str, Any] = {
    "type": "object",
    "description": "How the admin config is fetched from `NBINIT_CONFIG_URL` (set it in the "
    "baked config).",
    "properties": {
        "timeout": {
            "type": "number",
            "minimum": 0.5,
            "default": 8,
            "description": "Seconds for the whole fetch, retries and redirects included (never "
            "past `deadline`).",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1048576,
            "default": 1048576,
            "description": "Largest config body accepted; larger is refused while streaming.",
        },
        "retries": {
            "type": "integer",
            "minimum": 0,
            "maximum": 10,
            "default": 2,
            "description": "Retries after a refused connection, a timeout or HTTP 429/5xx.",
        },
        "max_stale_days": {
            "type": "number",
            "minimum": 0,
            "default": 7,
            "description": "How old the last good copy may be when the fetch fails (0: never use "
            "it).",
        },
    },
    "additionalProperties": False,
}

HOOKS: dict[str, Any] = {
    "type": "object",
    "description": "Executables run as the user before the server starts.",
    "properties": {
        "dir": {
            "type": "string",
            "default": "/etc/nbinit/hooks.d",
            "description": "Directory of hook executables, run in name order.",
        },
        "timeout": {
            "type": "number",
            "minimum": 0.1,
            "default": 5,
            "description": "Seconds for each hook.",
        },
    },
    "additionalProperties": False,
}

SINGLEUSER: dict[str, Any] = {
    "type": "object",
    "description": "Who provides jupyterhub-singleuser when the command is the hub's default.",
    "properties": {
        "runtime": {
            "enum": ["auto", "image", "nbinit"],
            "default": "auto",
            "description": "auto: the image's own when it has one, else nbinit's runtime for "
            "the hub's major version; image: only the image's (FATAL when missing); nbinit: "
            "always nbinit's runtime.",
        },
    },
    "additionalProperties": False,
}

CONFIG: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "nbinit config, version 1",
    "type": "object",
    "properties": {
        "version": {"const": 1, "description": "Required: the config format version."},
        "deadline": {
            "type": "number",
            "minimum": 1,
            "maximum": 600,
            "default": 20,
            "description": "Seconds from start to exec, at most; `NBINIT_DEADLINE` overrides it.",
        },
        "on_fatal": {
            "enum": ["explain", "exit"],
            "description": "After a FATAL: explain (serve the failure page on the server's "
            "address, then exit 0) or exit 1. Default: explain when a hub started the server "
            "(JUPYTERHUB_SERVICE_URL or JUPYTERHUB_SERVICE_PREFIX set), else exit.",
        },
        "explain_minutes": {
            "type": "number",
            "minimum": 0.05,
            "maximum": 1440,
            "default": 15,
            "description": "How long the failure page answers before nbinit exits 0 (SIGTERM ends "
            "it at once).",
        },
        "problems_file": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$",
            "default": "STARTUP-PROBLEMS.txt",
            "description": "Name of the file in the home's top directory that lists what a "
            "start could not do and the fix (removed after a clean start); off: never.",
        },
        "user": USER,
        "git": GIT,
        "repos": REPOS,
        "gpu": GPU,
        "fetch": FETCH,
        "hooks": HOOKS,
        "singleuser": SINGLEUSER,
    },
    "required": ["version"],
    "additionalProperties": False,
}

# The user's ~/.nbinit.yaml: only user-level keys.
DOTFILE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "nbinit user dotfile (~/.nbinit.yaml)",
    "type": "object",
    "properties": {"version": {"const": 1}, "repos": REPOS},
    "additionalProperties": False,
}

USER_KEYS = ("repos",)


def defaults(schema: dict[str, Any] = CONFIG) -> dict[str, Any]:
    """The built-in defaults, read off the schema's `default` fields."""
    result: dict[str, Any] = {}
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub:
            result[key] = json.loads(json.dumps(sub["default"]))
        elif sub.get("type") == "object" and "properties" in sub:
            result[key] = defaults(sub)
    if schema is CONFIG:
        result["version"] = 1
        result["repos"] = []
    return result


def main() -> None:
    """Print the published schemas or the config reference.

    `python -m nbinit.schema [config|dotfile|markdown]`; markdown is docs/config-reference.md.
    """
    which = sys.argv[1] if len(sys.argv) > 1 else "config"
    if which == "markdown":
        from nbinit import schemadoc  # the doc writer stays off the start path

        sys.stdout.write(schemadoc.markdown())
        return
    json.dump(DOTFILE if which == "dotfile" else CONFIG, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
