# shellcheck shell=bash
# nbinit's part for NVIDIA NGC images: /opt/nvidia/entrypoint.d/zz-nbinit.sh.
# nvidia_entrypoint.sh sources entrypoint.d/*.sh in name order with its own arguments, then
# execs them. This part runs last, after NGC's own parts have set up CUDA forward
# compatibility (LD_LIBRARY_PATH) and the driver checks, and hands the start to nbinit with
# that environment: `exec nbinit start -- "$@"`. nbinit, as root, creates the user's account
# and execs the same command as that user.
#
# It does nothing outside a hub (no JUPYTERHUB_USER / JUPYTERHUB_API_TOKEN), with
# NBINIT_DISABLE=1, or when the command already runs nbinit (singleuser.cmd set to
# `nbinit start -- ...`): then nvidia_entrypoint.sh goes on as it always does.

_nbinit_ngc_hand_over() {
    if [ "${NBINIT_DISABLE:-}" = 1 ] || [ -z "${JUPYTERHUB_USER:-}${JUPYTERHUB_API_TOKEN:-}" ]; then
        return 0
    fi
    if [ "$#" -gt 0 ]; then
        case "$(basename "$1")" in
            nbinit | nbinit-entrypoint) return 0 ;;
        esac
    fi
    if ! command -v nbinit >/dev/null 2>&1; then
        echo "ERROR[$(date '+%Y-%m-%d %H:%M:%S')] nbinit: NGC entrypoint part: nbinit is not on PATH; going on without it" >&2
        return 1
    fi
    echo "INFO[$(date '+%Y-%m-%d %H:%M:%S')] nbinit: NGC entrypoint part (uid $(id -u)): handing over to nbinit" >&2
    if [ "$#" -eq 0 ]; then
        exec nbinit start
    fi
    exec nbinit start -- "$@"
}
_nbinit_ngc_hand_over "$@"
