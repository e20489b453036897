"""Compile the zipapp's sources with the Python running this file (a build step, any 3.9+).

    PYTHONHASHSEED=0 python3.X -S -s bytecode.py < sources.zip > bytecode.zip

nbinit.bundle runs it once per interpreter it builds bytecode for, by path, so it imports
nothing from nbinit. Each `name.py` in comes out as `name.pyc`: the 16-byte header of an
unchecked hash-based .pyc (PEP 552: no source timestamp, which a zip and COPY would not
keep anyway) and the marshalled code. A fixed hash seed and sorted input give the same
bytes on every build.
"""

import importlib.util
import io
import sys
import zipfile

# Flags word of PEP 552: bit 0 set = hash-based, bit 1 clear = never checked against the source.
UNCHECKED_HASH = (1).to_bytes(4, "little")


def compile_archive(sources: bytes) -> bytes:
    import marshal

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(sources)) as archive, zipfile.ZipFile(out, "w") as result:
        for name in sorted(archive.namelist()):
            if not name.endswith(".py"):
                continue
            source = archive.read(name)
            code = compile(source, name, "exec", dont_inherit=True, optimize=0)
            header = importlib.util.MAGIC_NUMBER + UNCHECKED_HASH
            data = header + importlib.util.source_hash(source) + marshal.dumps(code)
            info = zipfile.ZipInfo(name + "c", date_time=(1980, 1, 1, 0, 0, 0))
            result.writestr(info, data)
    return out.getvalue()


if __name__ == "__main__":
    sys.stdout.buffer.write(compile_archive(sys.stdin.buffer.read()))
