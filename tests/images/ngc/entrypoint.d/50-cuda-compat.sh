# shellcheck shell=bash
# CUDA forward compatibility, as NGC's part enables it: the compat libraries come first.
export LD_LIBRARY_PATH="/usr/local/cuda/compat/lib.real${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
echo "NOTE: CUDA Forward Compatibility mode ENABLED."
