#!/bin/bash
# A stand-in for NVIDIA's nvidia_entrypoint.sh, with the same contract: print the banner,
# source /opt/nvidia/entrypoint.d/*.txt and *.sh in name order with the entrypoint's
# arguments, then run the command (bash when none).
set -e
shopt -s nullglob extglob
parts=( /opt/nvidia/entrypoint.d/*@(.txt|.sh) )
shopt -u nullglob extglob
echo
echo "== ${NVIDIA_PRODUCT_NAME:-NGC} =="
echo
for part in "${parts[@]}"; do
    case "${part}" in
        *.txt) cat "${part}" ;;
        *.sh) # shellcheck disable=SC1090
              source "${part}" ;;
    esac
done
if [ $# -eq 0 ]; then
    exec /bin/bash
fi
exec "$@"
