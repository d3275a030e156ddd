"""Generate lorag's Python gRPC code and type stubs from protos/, or check that the committed code is current.

    python scripts/gen_protos.py           # regenerate into libs/lorag-core/src/lorag/
    python scripts/gen_protos.py --check   # exit 1 (naming the stale files) if the committed code differs

One generator for everyone: grpcio-tools (the same minor as the grpcio runtime) for messages and services,
mypy-protobuf for the .pyi stubs of both.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "lorag-core" / "src"
PACKAGE = "lorag"  # the generated namespace package inside OUT


def generate(out: Path) -> None:
    """Run protoc over every .proto under protos/ into ``out``."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf well-known types
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside the interpreter
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # Package markers so the generated modules import as lorag.<svc>.v1.* (lorag itself stays a namespace).
    for directory in sorted({p.parent for p in (out / PACKAGE).rglob("*_pb2.py")}):
        while directory != out / PACKAGE:
            (directory / "__init__.py").touch()
            directory = directory.parent


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed generated code is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        current_root = OUT / PACKAGE
        fresh_root = fresh / PACKAGE
        if check:
            want, have = _tree(fresh_root), _tree(current_root) if current_root.exists() else set()
            stale = sorted(want ^ have) + sorted(
                f for f in want & have if not filecmp.cmp(fresh_root / f, current_root / f, shallow=False)
            )
            if stale:
                print("generated code is stale; run `make protos` and commit:", *stale, sep="\n  ")
                sys.exit(1)
            print(f"generated code is current ({len(want)} files)")
            return
        shutil.rmtree(current_root, ignore_errors=True)
        shutil.copytree(fresh_root, current_root)
        print(f"generated {len(_tree(current_root))} files into {current_root.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
