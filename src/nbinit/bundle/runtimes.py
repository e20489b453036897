"""The singleuser runtimes: one zip of jupyterhub-singleuser per JupyterHub major version,
which the tree carries for images that lack it (nbinit.singleuser picks one at start).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from nbinit.bundle import (
    BundleError,
    Entry,
    download_pinned,
    find_wheel,
    wheel_entries,
    zipapp_bytes,
)

# jupyterhub-singleuser for images that lack it: per supported major version of JupyterHub,
# the newest release and the pure-Python packages it imports beyond what jupyter_server 2
# already brings (tornado, traitlets, jinja2, prometheus_client, packaging, attrs...). The
# launcher appends a runtime to sys.path of the server process only, so the image's own
# packages win and kernels never see it. Pure wheels only: SQLAlchemy, aiohttp, multidict,
# yarl, propcache and frozenlist fall back to their Python code without the C speed-ups.
# The dependency versions are the newest that still install on the oldest Python each
# JupyterHub supports (alembic 1.17 and Mako 1.4 need 3.10; JupyterHub 6 needs 3.10 itself).
RUNTIME_PINS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "jupyterhub",
        "4.1.6",
        ("jupyterhub",),
        "3a625fae7fae069b4af1ab907c8cf51061f545ce7af2126d394d81f251acea61",
    ),
    (
        "jupyterhub",
        "5.5.4",
        ("jupyterhub",),
        "1d987cbe96390e1877ae37b33e0f2936cac72d3abff93496551c58c1df1f533d",
    ),
    (
        "jupyterhub",
        "6.1.1",
        ("jupyterhub",),
        "ae20ed7b3d7cef1dd5d51e28723fd53853d69f732e7a9e84a73136acab454248",
    ),
    (
        "SQLAlchemy",
        "2.0.58",
        ("sqlalchemy",),
        "cc1b78ba0ed1f32156d1582f94ca4aca74633e4dcdde3eb1562dd4742493f594",
    ),
    (
        "alembic",
        "1.16.5",
        ("alembic",),
        "e845dfe090c5ffa7b92593ae6687c5cb1a101e91fa53868497dbd79847f9dbe3",
    ),
    (
        "Mako",
        "1.3.12",
        ("mako",),
        "8f61569480282dbf557145ce441e4ba888be453c30989f879f0d652e39f53ea9",
    ),
    (
        "typing_extensions",
        "4.16.0",
        ("typing_extensions.py",),
        "481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8",
    ),
    (
        "async_generator",
        "1.10",
        ("async_generator",),
        "01c7bf666359b4967d2cda0000cc2e4af16a0ae098cbffcb8472fb9e8ad6585b",
    ),
    (
        "aiohttp",
        "3.14.5",
        ("aiohttp",),
        "efc21a454892828368b11c2c780de0ff8bc991f73f6b99c6b66e56205470929b",
    ),
    (
        "multidict",
        "7.1.0",
        ("multidict",),
        "d9ef29cfd98e17085b4f91bba8fa1570bec6787d5c52ce653ed33a58785585d0",
    ),
    (
        "yarl",
        "1.25.1",
        ("yarl",),
        "681c758b0490f9e96b78e5fa8e8dc6e648e9185bb6eaebe73183c33ea0c445f3",
    ),
    (
        "propcache",
        "0.5.4",
        ("propcache",),
        "62c60aec739ed00124573cce1178138fd690c7676352d67a37328c1cf51d7468",
    ),
    (
        "frozenlist",
        "1.8.0",
        ("frozenlist",),
        "0c18a16eab41e82c295618a77502e17b195883241c563b00f0aa5106fc4eaa0d",
    ),
    (
        "aiosignal",
        "1.4.0",
        ("aiosignal",),
        "053243f8b92b990551949e63930a839ff0cf0b0ebbe0597b0f3fb19e1a0fe82e",
    ),
    (
        "aiohappyeyeballs",
        "2.7.1",
        ("aiohappyeyeballs",),
        "9243213661e29250eb41368e5daa826fc017156c3b8a11440826b2e3ed376472",
    ),
    (
        "async-timeout",
        "5.0.1",
        ("async_timeout",),
        "39e3809566ff85354557ec2398b55e096c8364bacac9405a7a1fa429e77fe76c",
    ),
)
_COMMON = ("SQLAlchemy", "alembic", "Mako", "typing_extensions")
_AIOHTTP = ("aiohttp", "multidict", "yarl", "propcache", "frozenlist", "aiosignal")
# JupyterHub version -> the projects its runtime holds besides jupyterhub itself (measured:
# the modules `import jupyterhub.singleuser.extension` loads next to jupyter_server 2).
RUNTIMES: dict[str, tuple[str, ...]] = {
    "4.1.6": (*_COMMON, "async_generator"),
    "5.5.4": _COMMON,
    "6.1.1": (*_COMMON, *_AIOHTTP, "aiohappyeyeballs", "async-timeout"),
}
RUNTIME_DIR = "usr/local/lib/nbinit/singleuser"  # in the tree; /usr/local/lib/... in an image
DEFAULT_RUNTIME_WHEELS = Path("build/singleuser-wheels")
# Never imported by the single-user server (measured, and its tests run from the zip): the
# hub's own application, REST API and database migrations, other databases' dialects.
RUNTIME_LEFT_OUT = (
    "jupyterhub/app.py",
    "jupyterhub/apihandlers/",
    "jupyterhub/alembic/",
    "sqlalchemy/testing/",
    "sqlalchemy/dialects/mysql/",
    "sqlalchemy/dialects/oracle/",
    "sqlalchemy/dialects/mssql/",
    "sqlalchemy/ext/mypy/",
    "alembic/testing/",
)
RUNTIME_DATA = ("jupyterhub/singleuser/templates/page.html",)


def runtime_name(version: str) -> str:
    return f"jupyterhub-{version}.zip"


def runtime_pins(version: str) -> list[tuple[str, str, tuple[str, ...], str]]:
    wanted = {("jupyterhub", version), *((p, "") for p in RUNTIMES[version])}
    return [pin for pin in RUNTIME_PINS if (pin[0], pin[1]) in wanted or (pin[0], "") in wanted]


def fetch_runtime_wheels(wheels: Path) -> None:
    """Download the runtimes' pinned wheels (hash-checked, pure); one pip call per runtime."""
    for version in RUNTIMES:
        pins = runtime_pins(version)
        if all(find_wheel(wheels, p, v, h) for p, v, _, h in pins):
            continue
        # pip refuses two versions of one project in a requirements file: one runtime a call.
        download_pinned(
            wheels,
            pins,
            f"requirements-{version}.txt",
            ("3.10", "py", "none", "any"),
            "the singleuser runtime wheels",
        )


def _runtime_entry_kept(name: str) -> bool:
    parts = PurePosixPath(name).parts
    if any(part in ("test", "tests") for part in parts):
        return False
    if name.startswith(RUNTIME_LEFT_OUT):
        return False
    return name.endswith(".py") or name in RUNTIME_DATA


def runtime_entries(version: str, wheels: Path) -> list[Entry]:
    """Every entry of one runtime zip, sorted: the packages' code, licences, a manifest."""
    entries: list[Entry] = []
    manifest = [f"jupyterhub {version} for nbinit's launcher (licences beside this file):"]
    for project, pinned, packages, sha256 in runtime_pins(version):
        path = find_wheel(wheels, project, pinned, sha256)
        if path is None:
            raise BundleError(
                f"{wheels}: no {project} {pinned} wheel with sha256 {sha256[:16]}...: "
                "run scripts/setup.sh (or python3 -m nbinit.bundle --fetch-only) to download it"
            )
        found = wheel_entries(path, packages, project, keep=_runtime_entry_kept)
        if not any(e.name.startswith("licenses/") for e in found):
            found.append(Entry(f"licenses/{project}/LICENSE-METADATA", _licence_lines(path)))
        for entry in found:
            # Not importable (a hyphen), so the licences never shadow a package named so.
            name = entry.name.replace("licenses/", "nbinit-licenses/", 1)
            entries.append(Entry(name, entry.data))
        manifest.append(f"{project}=={pinned} ({path.name}, sha256 {sha256})")
    entries.append(Entry("nbinit-licenses/MANIFEST.txt", ("\n".join(manifest) + "\n").encode()))
    return sorted(entries, key=lambda e: e.name)


def _licence_lines(path: Path) -> bytes:
    """A wheel without a licence file (async_generator): the licence its metadata declares."""
    with zipfile.ZipFile(path) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        text = wheel.read(metadata).decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.startswith(("License", "Classifier: Lic"))]
    return (
        "\n".join([f"{path.name} ships no licence file; its metadata says:", *lines]) + "\n"
    ).encode()


def build_runtimes(wheels: Path = DEFAULT_RUNTIME_WHEELS) -> dict[str, bytes]:
    """Tree path -> bytes of each runtime zip; downloads the wheels when any is missing."""
    fetch_runtime_wheels(wheels)
    return {
        f"{RUNTIME_DIR}/{runtime_name(version)}": zipapp_bytes(
            runtime_entries(version, wheels), shebang=b""
        )
        for version in RUNTIMES
    }
