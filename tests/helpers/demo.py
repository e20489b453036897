"""The README's example: nbinit start in a throwaway container with an HTTP-served config."""

from __future__ import annotations

import http.server
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.sandbox import Sandbox  # noqa: E402

ADMIN_CONFIG = b"""version: 1
deadline: 15
user:
  marker: /s/{user}/jupyterhub
"""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nbinit-demo-") as tmp:
        served = Path(tmp) / "served"
        served.mkdir()
        (served / "config.yaml").write_bytes(ADMIN_CONFIG)
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/config.yaml"

        box = Sandbox(Path(tmp) / "container")
        box.add_jovyan()
        box.mkdir("/s/alice/jupyterhub", mode=0o755)
        env = {
            "JUPYTERHUB_USER": "alice",
            "NB_UID": "4321",
            "NB_GID": "4321",
            "NBINIT_CONFIG_URL": url,
        }
        print(f"demo: admin config served at {url}", file=sys.stderr)
        # alice is created beside jovyan (getent shows both), owns her new home, under tini.
        show = (
            "id; pwd; getent passwd jovyan alice; ls -ld /home/alice; "
            "echo PID 1 is $(cat /proc/1/comm)"
        )
        print(f"demo: nbinit start -- sh -c '{show}' as PID 1", file=sys.stderr)
        result = box.run(["nbinit", "start", "--", "sh", "-c", show], env=env)
        sys.stderr.write(result.stderr)
        sys.stdout.write(result.stdout)
        server.shutdown()
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
