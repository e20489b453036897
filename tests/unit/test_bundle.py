"""The zipapp: same input, same bytes; only pure-Python code that parses as 3.9; licences in;
bytecode for the interpreters it was built with, sources for every other."""

from __future__ import annotations

import ast
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.wait import wait_until

from nbinit import bundle, runtime
from nbinit.bundle.runtimes import DEFAULT_RUNTIME_WHEELS

PROJECT = Path(__file__).resolve().parents[2]
WHEELS = PROJECT / bundle.DEFAULT_WHEELS
# Bytes, with bytecode for one Python; today about 0.5 MB (each further Python adds about
# 0.25 MB). A jump means something big slipped in.
SIZE_BUDGET = 1_000_000
MAGIC = importlib.util.MAGIC_NUMBER.hex()  # the venv's, Debian's /usr/bin/python3's


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "nbinit.pyz"
    assert bundle.main(["-o", str(path), "--wheels", str(WHEELS), "--python", sys.executable]) == 0
    return path


def entries(path: Path) -> list[zipfile.ZipInfo]:
    return zipfile.ZipFile(io.BytesIO(path.read_bytes())).infolist()


def test_two_builds_give_the_same_bytes(built, tmp_path):
    again = tmp_path / "again.pyz"
    assert bundle.main(["-o", str(again), "--wheels", str(WHEELS), "--python", sys.executable]) == 0
    assert again.read_bytes() == built.read_bytes()


def test_headers_are_fixed_and_entries_sorted(built):
    infos = entries(built)
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {bundle.FIXED_DATE}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert built.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert built.stat().st_mode & 0o777 == 0o755
    assert built.stat().st_size < SIZE_BUDGET


def test_holds_every_dependency_and_its_licence(built):
    names = {i.filename for i in entries(built)}
    for package in ("nbinit", "certifi", "yaml"):
        assert f"{package}/__init__.py" in names
    # The fetch is a GET over the standard library's socket: requests' stack is not shipped.
    assert not any(n.startswith(("requests/", "urllib3/", "idna/", "charset_norm")) for n in names)
    assert "yaml/__init__.py" in names
    # nbinit runs git only through nbinit.git.runner; GitPython is not shipped (docs/reference.md).
    assert not any(n.startswith(("git/", "gitdb/", "smmap/")) for n in names)
    assert "certifi/cacert.pem" in names
    assert "__main__.py" in names
    for project, _, _, _ in bundle.PINS:
        assert any(n.startswith(f"licenses/{project}/") for n in names), project
    assert "licenses/MANIFEST.txt" in names


@pytest.mark.parametrize(
    "unwanted",
    [
        pytest.param(lambda n: n.endswith((".so", ".pyd")), id="compiled-extensions"),
        pytest.param(lambda n: n.startswith("_yaml/"), id="libyaml-shim"),
        pytest.param(lambda n: "/test/" in n or "/tests/" in n, id="test-suites"),
        pytest.param(lambda n: "__pycache__" in n, id="pycache-dirs"),
        pytest.param(
            lambda n: n.endswith(".pyc") and not n.startswith(f"pyc.{MAGIC}/"),
            id="bytecode-of-other-pythons",
        ),
        pytest.param(lambda n: n.startswith("psutil/"), id="psutil"),
    ],
)
def test_leaves_out(built, unwanted):
    assert [i.filename for i in entries(built) if unwanted(i.filename)] == []


def test_every_module_parses_as_python_3_9(built):
    archive = zipfile.ZipFile(io.BytesIO(built.read_bytes()))
    for name in archive.namelist():
        if name.endswith(".py"):
            ast.parse(archive.read(name), filename=name, feature_version=(3, 9))


def test_pins_allow_python_3_9():
    """Each pinned wheel's Requires-Python admits 3.9 (requests 2.33+ would not)."""
    from packaging.specifiers import SpecifierSet

    for project, version, _, sha256 in bundle.PINS:
        wheel = bundle.find_wheel(WHEELS, project, version, sha256)
        assert wheel is not None, project
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(metadata).decode()
        requires = [
            ln.split(":", 1)[1].strip()
            for ln in text.splitlines()
            if ln.startswith("Requires-Python:")
        ]
        assert not requires or "3.9" in SpecifierSet(requires[0]), (project, requires)


def test_runs_on_isolated_system_python(built, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    for flags in (["-I", "-S"], ["-I"]):
        result = subprocess.run(
            ["/usr/bin/python3", *flags, str(built), "config", "validate", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{config}: valid\n"


def test_its_own_packages_win_over_the_image_site_packages(built, tmp_path):
    """Debian's python has PyYAML in dist-packages; the zipapp's copy is the one imported."""
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    result = subprocess.run(
        ["/usr/bin/python3", "-v", str(built), "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = [ln for ln in result.stderr.splitlines() if ln.startswith("import 'yaml")]
    assert loaded and all(f'zipimporter object "{built}/' in ln for ln in loaded), loaded


def loaders(archive: Path, tmp_path: Path) -> dict[str, str]:
    """Where each nbinit and yaml module came from in a run of the zipapp (`python -v`)."""
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-v", str(archive), "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: valid\n"
    found = {}
    for line in result.stderr.splitlines():
        if line.startswith(("import 'nbinit", "import 'yaml")):
            name, _, where = line[len("import '") :].partition("' # ")
            found[name] = where
    return found


def test_a_start_runs_the_bytecode_built_for_this_python(built, tmp_path):
    names = {i.filename for i in entries(built)}
    assert f"pyc.{MAGIC}/nbinit/cli.pyc" in names
    assert f"pyc.{MAGIC}/yaml/__init__.pyc" in names
    found = loaders(built, tmp_path)
    assert {"nbinit", "nbinit.cli", "nbinit.commands", "yaml", "yaml.loader"} <= set(found)
    assert set(found.values()) == {f'<zipimporter object "{built}/pyc.{MAGIC}/">'}


def test_with_bytecode_nothing_but_main_is_compiled(built, tmp_path):
    """The point of the bytecode: a start compiles no module from source (a loader that
    asks zipimport for a file name makes it compile the source to answer)."""
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    code = (
        "import builtins, runpy, sys; compiled = []; real = builtins.compile; "
        "builtins.compile = lambda source, name, *a, **k: compiled.append(name) or "
        "real(source, name, *a, **k); "
        "sys.argv = [sys.argv[1], 'config', 'validate', sys.argv[2]]; "
        "run = lambda: runpy.run_path(sys.argv[0], run_name='__main__'); "
        "exec('try: run()\\nexcept SystemExit: pass'); "
        "import nbinit.config, yaml; print(sorted(set(compiled)))"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code, str(built), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str([f"{built}/__main__.py"])


def test_without_bytecode_for_this_python_the_sources_run(built, tmp_path):
    """An interpreter the build did not know (another magic number) imports the sources."""
    other = tmp_path / "other.pyz"
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(other, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            info.filename = info.filename.replace(f"pyc.{MAGIC}/", "pyc.00000000/")
            target.writestr(info, data)
    found = loaders(other, tmp_path)
    assert "nbinit.cli" in found
    assert all(w.startswith(f'<zipimporter object "{other}/') for w in found.values()), found
    assert not any("/pyc." in where for where in found.values()), found


def test_bytecode_keeps_the_sources_file_names(built, tmp_path):
    """__file__ and tracebacks name the source inside the archive, as without bytecode."""
    code = (
        "import runpy, sys; main = runpy.run_path(sys.argv[1], run_name='zipmain'); "
        "print(main['use_bytecode'](sys.argv[1])); "
        "import nbinit.cli, yaml; print(nbinit.cli.__file__); print(yaml.__file__); "
        "print(nbinit.cli.main.__code__.co_filename)"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code, str(built)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "True",
        f"{built}/nbinit/cli.py",
        f"{built}/yaml/__init__.py",
        f"{built}/nbinit/cli.py",
    ]


@pytest.mark.parametrize(
    "module, args, expected",
    [
        pytest.param("nbinit", "'--version'", "nbinit ", id="the-package"),
        # the git worker is a submodule (nbinit.git.worker), run from this Python's bytecode
        pytest.param("nbinit.schema", "'config'", '{\n  "$schema"', id="a-submodule"),
    ],
)
def test_module_command_runs_a_module_of_the_zipapp(built, module, args, expected):
    """What the git worker needs: a second interpreter that finds nbinit inside the zipapp."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import subprocess; "
        "from nbinit import runtime; "
        f"sys.exit(subprocess.run([*runtime.module_command({module!r}), {args}]).returncode)"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", code, str(built)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected)
    assert runtime.module_command("nbinit.git.worker") == [
        sys.executable,
        "-I",
        "-m",
        "nbinit.git.worker",
    ]


def test_module_command_serves_the_archives_bytecode(built):
    """`ARCHIVE -m MODULE` (zipmain) puts the bytecode finder in place before the module runs."""
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-v", str(built), "-m", "nbinit.markerwalk", "/", "/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "present \n"
    assert f"import 'nbinit' # <zipimporter object \"{built}/pyc.{MAGIC}/\">" in result.stderr


def test_foreign_module_command_from_the_zipapp_lets_the_images_packages_win(built, tmp_path):
    """On another Python, nbinit's packages (its yaml) never shadow the image's own."""
    image = tmp_path / "image-site"
    image.mkdir()
    (image / "yaml.py").write_text("__version__ = 'the-image-s'\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import subprocess; "
        "from nbinit import runtime; "
        "print(runtime.foreign_module_command(['/usr/bin/python3'], 'nbinit.versionprobe'))"
    )
    listed = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", code, str(built)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    command = ast.literal_eval(listed.stdout)
    assert command == ["/usr/bin/python3", f"{built}/nbinit/foreign", "nbinit.versionprobe"]
    result = subprocess.run(
        [*command, "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(image)},
    )
    assert (result.returncode, result.stdout) == (0, "the-image-s\n"), result.stderr


def test_tree_is_the_zipapp_and_the_shims_with_fixed_modes(built, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        bundle.write_tree(root, built.read_bytes())
    listing = {
        str(p.relative_to(first)): (p.stat().st_mode & 0o7777, int(p.stat().st_mtime))
        for p in sorted(first.rglob("*"))
    }
    assert listing == {
        str(p.relative_to(second)): (p.stat().st_mode & 0o7777, int(p.stat().st_mtime))
        for p in sorted(second.rglob("*"))
    }
    assert (first / "usr/local/bin/nbinit").read_bytes() == built.read_bytes()
    assert listing["usr/local/bin/nbinit"][0] == 0o755
    assert listing["usr/local/bin/nbinit-entrypoint"][0] == 0o755
    assert listing["usr/local/bin/start-notebook.d/zz-nbinit.sh"][0] == 0o644
    assert listing["opt/nvidia/entrypoint.d/zz-nbinit.sh"][0] == 0o644
    assert {mode for mode, _ in listing.values() if mode not in (0o644, 0o755)} == set()
    assert {mtime for _, mtime in listing.values()} == {bundle.FIXED_MTIME}


def test_tree_builds_from_a_regular_install(tmp_path):
    """The files a wheel holds (setuptools' build_py, as bdist_wheel runs it), without the
    checkout around them: the shims come from the package data, not from entrypoints/."""
    lib = tmp_path / "lib"
    built_lib = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(lib),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built_lib.returncode == 0, built_lib.stderr
    assert not (lib / "nbinit" / "shims").is_symlink()  # copied, as a wheel holds them
    tree = tmp_path / "tree"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "nbinit.bundle", "--tree", str(tree), "--wheels", str(WHEELS)),
            # the project's runtime wheels (offline), and no bytecode: this is about the shims
            *("--runtime-wheels", str(PROJECT / DEFAULT_RUNTIME_WHEELS), "--python", "none"),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for relative, source, _ in bundle.TREE:
        if source != bundle.ZIPAPP:
            shim = (PROJECT / "entrypoints" / source).read_bytes()
            assert (tree / relative).read_bytes() == shim, relative


def test_usage_without_an_output(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bundle.main([])
    assert exit_info.value.code == 2
    assert "give -o FILE, --tree DIR or --fetch-only" in capsys.readouterr().err


def test_a_wheel_that_does_not_match_its_pin_is_not_used(tmp_path):
    project, version, _, sha256 = bundle.PINS[0]
    good = bundle.find_wheel(WHEELS, project, version, sha256)
    assert good is not None
    tampered = tmp_path / good.name
    tampered.write_bytes(good.read_bytes() + b"\0")
    assert bundle.find_wheel(tmp_path, project, version, sha256) is None


def test_docs_and_dockerfile_use_the_tree_the_bundle_lays_out():
    """The one COPY line people copy from the docs is the one the tests prove."""
    readme = (PROJECT / "README.md").read_text()
    delivery = (PROJECT / "docs" / "delivery.md").read_text()
    dockerfile = (PROJECT / "Dockerfile.test").read_text()
    line = "COPY build/nbinit-root/ /"
    assert line in dockerfile.splitlines()
    assert line in readme.splitlines()
    assert delivery.count(line) >= 3  # docker-stacks, NGC, plain python
    for page in (readme, delivery):
        assert "python3 -m nbinit.bundle --tree build/nbinit-root" in page
    for path, _, _ in bundle.TREE:
        assert f"/{path}" in delivery, path


def test_a_named_interpreter_that_cannot_compile_is_an_error(tmp_path, capsys):
    """Found interpreters that do not run are skipped; one the builder named is not."""
    target = tmp_path / "nbinit.pyz"
    code = bundle.main(
        ["-o", str(target), "--wheels", str(WHEELS), "--python", str(tmp_path / "python3")]
    )
    assert code == 1
    assert not target.exists()
    assert capsys.readouterr().err.startswith(
        f"nbinit.bundle: error: cannot compile with {tmp_path / 'python3'}: "
    )


def test_the_build_tool_is_not_shipped(built):
    """Every image carries the zipapp: the build tool (the nbinit.bundle package) stays out."""
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
    assert "nbinit/cli.py" in names
    assert "nbinit/git/policy.py" in names  # a subpackage is shipped: the check can fail
    assert not [n for n in names if "nbinit/bundle/" in n or "bytecode.py" in n]


@pytest.mark.parametrize("where", ["installed", "zipapp"])
def test_the_detach_program_runs_by_path_and_leaves_no_child(built, tmp_path, where):
    """privilege.spawn_detached_as_user's middle process: it exits at once and its child
    execs PROGRAM, which is then nobody's child here (reparented), from the zipapp too."""
    location = str(built) if where == "zipapp" else runtime.package_location()
    out = tmp_path / "ppid"
    # The parent as it is when the program has run a while ($PPID is the one at its start).
    script = f"sleep 0.5; sed -n 's/^PPid:\\s*//p' /proc/$$/status > {out}"
    middle = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-S", f"{location}/nbinit/detach", "/bin/sh", "-c", script]
    )
    assert middle.wait(timeout=30) == 0
    parent = wait_until(
        "the detached program's parent pid", lambda: out.read_text().strip(), timeout=30
    )
    assert int(parent) != middle.pid  # the middle had exited: someone else reaps it
    usage = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", f"{location}/nbinit/detach"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert usage.returncode == 64
    assert "usage" in usage.stderr
