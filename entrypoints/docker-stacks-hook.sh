# shellcheck shell=bash
# shellcheck disable=SC2154  # cmd is start.sh's array of the command
# nbinit's hook for jupyter/docker-stacks images (start.sh sources it; it is not executable).
# The one tree puts it at both
#   /usr/local/bin/start-notebook.d/zz-nbinit.sh   (sourced first, as the container's user)
#   /usr/local/bin/before-notebook.d/zz-nbinit.sh  (sourced after start.sh's own setup)
#
# Started as root, start.sh would next rename jovyan to NB_USER and `exec sudo` to it, and a
# server started that way can never get the user's own account. So, as root, this hook hands
# the whole start to nbinit from start-notebook.d, before that switch: nbinit creates the
# account, syncs repos, and execs the same command as that user. Not root, there is no
# switch to get ahead of: start.sh finishes its own checks and the hook hands over from
# before-notebook.d. Either way the command is start.sh's own `cmd` (default: the z2jh
# `singleuser.cmd`, jupyterhub-singleuser) and tini stays PID 1.
#
# It does nothing outside a hub (no JUPYTERHUB_USER / JUPYTERHUB_API_TOKEN) or with
# NBINIT_DISABLE=1: then the image starts exactly as it would without nbinit.

_nbinit_hand_over() {
    local phase uid
    phase="$(basename "$(dirname "${BASH_SOURCE[0]}")")"
    uid="$(id -u)"
    if [ "${NBINIT_DISABLE:-}" = 1 ] || [ -z "${JUPYTERHUB_USER:-}${JUPYTERHUB_API_TOKEN:-}" ]; then
        return 0
    fi
    if [ "${phase}" = start-notebook.d ] && [ "${uid}" != 0 ]; then
        return 0 # not root: hand over from before-notebook.d, after start.sh's checks
    fi
    if ! command -v nbinit >/dev/null 2>&1; then
        echo "ERROR[$(date '+%Y-%m-%d %H:%M:%S')] nbinit: docker-stacks hook: nbinit is not on PATH; start.sh goes on without it" >&2
        return 1
    fi
    # start.sh keeps the command in its array `cmd`. Without it this file was not sourced
    # by start.sh itself (a runner that sources hooks in a subshell would run the whole
    # server inside the hook): stand aside; singleuser.cmd can run nbinit instead.
    if ! declare -p cmd >/dev/null 2>&1; then
        echo "WARNING[$(date '+%Y-%m-%d %H:%M:%S')] nbinit: docker-stacks hook: not sourced by start.sh (no \$cmd): not handing over; set singleuser.cmd to [nbinit, start, --, jupyterhub-singleuser]" >&2
        return 0
    fi
    local -a command=("${cmd[@]}")
    # JUPYTER_ENV_VARS_TO_UNSET is honoured after the hooks; this hook is the last one.
    if declare -F unset_explicit_env_vars >/dev/null; then
        unset_explicit_env_vars
    fi
    echo "INFO[$(date '+%Y-%m-%d %H:%M:%S')] nbinit: docker-stacks hook (${phase}, uid ${uid}): handing over to nbinit" >&2
    case "$(basename "${command[0]}")" in
        nbinit | nbinit-entrypoint) exec "${command[@]}" ;; # singleuser.cmd already runs nbinit
    esac
    exec nbinit start -- "${command[@]}"
}
_nbinit_hand_over
