"""The README's example: `nbinit start` as PID 1 in a throwaway container (the test sandbox).

An admin config served over HTTP on loopback declares a notebook repo served by a real
`git http-backend`; alice has the marker, so nbinit creates her beside jovyan, clones the
repo into her home as her, and execs the command under tini as alice.
"""

from __future__ import annotations

import http.server
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.gitserver import GitHttpServer, Pusher, make_bare  # noqa: E402
from helpers.sandbox import Sandbox  # noqa: E402

ADMIN_CONFIG = """version: 1
deadline: 15
git:
  allowed_schemes: [http]   # loopback demo server; real deployments use https or ssh
repos:
  - url: {repo_url}
    dest: tutorials
"""

SHOW = (
    "id; pwd; getent passwd jovyan alice; ls -l /home/alice/tutorials; "
    "echo PID 1 is $(cat /proc/1/comm)"
)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nbinit-demo-") as tmp:
        root = Path(tmp)
        repos = root / "repos"
        repos.mkdir()
        Pusher(make_bare(repos, "tutorials"), root / "upstream").publish(
            {"01-intro.ipynb": "{}\n", "README.md": "# Tutorials\n"}, "first lesson"
        )
        git_server = GitHttpServer(repos).start()

        served = root / "served"
        served.mkdir()
        config = ADMIN_CONFIG.format(repo_url=git_server.url("tutorials"))
        (served / "config.yaml").write_text(config)
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
        config_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=config_server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{config_server.server_address[1]}/config.yaml"

        box = Sandbox(root / "container")
        box.add_jovyan()
        box.mkdir("/s/alice/jupyterhub", mode=0o755)
        env = {
            "JUPYTERHUB_USER": "alice",
            "NB_UID": "4321",
            "NB_GID": "4321",
            "NBINIT_CONFIG_URL": url,
        }
        print(f"demo: admin config served at {url}:\n{config}", file=sys.stderr)
        print(f"demo: nbinit start -- sh -c '{SHOW}' as PID 1\n", file=sys.stderr)
        result = box.run(["nbinit", "start", "--", "sh", "-c", SHOW], env=env)
        sys.stderr.write(result.stderr)
        sys.stdout.write(result.stdout)
        config_server.shutdown()
        git_server.stop()
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
