"""Every git operation nbinit performs, behind one policy that no caller can bypass.

Design, and why:

* **A worker that already is the user.** Root never runs git: `start_worker` starts
  `python -I -m nbinit.git.worker` (from the zipapp too) through
  `privilege.spawn_detached_as_user` (uid, gid, the user's own groups never root's, the
  user's HOME and umask). Every file nbinit writes in the home
  (clones, renamed-aside files, backups, locks, the progress file) is written by that
  worker, so no root-owned file lands in the home, git's "dubious ownership" check never
  fires, and a symlink the user planted can only redirect the user's own writes. The
  worker reads a JSON plan on stdin and writes one JSON line per event on stdout.
* **Detached, so it can outlive the deadline.** The worker is not nbinit's child (double
  fork): what is unfinished when the spawn deadline comes keeps running after nbinit has
  exec'd the server, as the user, and its progress file (`~/.cache/nbinit/repos.json`)
  shows how far it got until it ends. Nothing is killed halfway.
* **One runner, hard timeouts.** Every git process goes through `Runner.run`, which uses
  `privilege.run_as_user`: own process group, killed as a group on timeout (`git.timeout`),
  because GitPython's `kill_after_timeout` does not apply to `clone_from` and git has no
  HTTP timeout of its own (`http.lowSpeedLimit/Time` are set as well).
* **No GitPython in the sync path (decided, and measured).** GitPython cannot set the
  subprocess user, its `kill_after_timeout` does not cover `clone_from`, its unsafe-option
  guard is a denylist (bypassed many times) that does not cover the environment, and
  `import git` itself runs `git version` outside any timeout and took 0.10-0.17 s in the
  worker on the 2-core test machine, 10-15 % of the 1 s budget of a restart where nothing
  changed. What the worker needs to inspect (HEAD, refs, origin) it reads from `.git`'s
  files or asks `git` through the runner. Nothing imports `git`, so GitPython is not a
  dependency at all: shipping it into every image would only offer a second way to run git.
* **The policy.** URLs: allowed schemes (`git.allowed_schemes`), allowed hosts for
  user-declared repos (`git.allowed_hosts`), `ext::`/`fd::`/any `transport::` never,
  `file` only when the admin lists it, nothing that starts with `-`, no password in a
  URL. Destinations: relative, inside the home after symlinks are resolved, checked
  again right before each write. Every git process gets a clean, built environment (not
  the pod's `GIT_*`), `GIT_ALLOW_PROTOCOL`, `-c protocol.*.allow`, an empty hooks
  directory, no submodules unless `git.submodules`, `transfer.credentialsInUrl=die`, no
  system or global git config, no prompts. Credentials come from `git.credential_helper`,
  `~/.netrc` or the token in `git.token_env`, never from the URL.

The package is split at the root/user line. Root (the `repos` step) imports only `policy`
(URL and destination rules, the git settings' typed view) and `launcher` (starts the
worker and reads its events); neither imports `runner`, `lock`, `repo` or `worker`, so the
root process cannot run git by construction (tests/unit/test_git_layering.py checks the
import graph, and a sandbox test a real start's). The user side: `worker` (the
`python -m nbinit.git.worker` process), `repo` (one repo's sync), `gitdir` (a clone's
.git read as files, to spare a restart git processes), `lock` (the per-repo lock) and
`runner` (the one place a git process is started).
"""
