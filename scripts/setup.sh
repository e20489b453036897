#!/usr/bin/env bash
# Prepare this machine for nbinit's tests and demo: system packages, the test venv, the
# JupyterHub proxy. Idempotent and quiet when everything is already there. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# podman and friends run the real-image tests (tests/container): no Docker engine, no
# registry; crun refuses this kernel's cgroups, so runc; the base image comes from mmdebstrap.
# chromium: the end-to-end tests render the failure page in a real browser (headless).
apt_packages=(tini git shellcheck python3-venv iproute2 util-linux
  podman buildah mmdebstrap runc uidmap fuse-overlayfs chromium)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is built from Debian's /usr/bin/python3: the default Python here lives under
# /root, which a process that dropped root cannot enter, and the sandbox tests drop root.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.base_prefix == "/usr"' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.nbinit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing nbinit and its test dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c 'import nbinit, pytest, jupyterhub' && touch "$stamp"
fi

# configurable-http-proxy for the real JupyterHub end-to-end test.
if [ ! -x node_modules/.bin/configurable-http-proxy ] && command -v npm >/dev/null; then
  echo "setup: installing configurable-http-proxy" >&2
  # package.json pins the range; no lock file, so no registry address is recorded here.
  npm install --no-audit --no-fund --silent --no-package-lock >/dev/null \
    || { echo "setup: npm install configurable-http-proxy failed" >&2; exit 1; }
fi

# The pinned, hash-checked wheels the one-file nbinit is built from (python3 -m nbinit.bundle);
# downloaded once, then the bundle and delivery tests build offline.
.venv/bin/python -m nbinit.bundle --fetch-only --wheels build/bundle-wheels

# The real images the container tests run (tests/helpers/images.py): the base from Debian
# packages, the pinned wheels from PyPI, once; after that only changed inputs rebuild.
# Prints the podman run flags it probed; says why and goes on where podman cannot run.
.venv/bin/python tests/helpers/images.py
