"""Regenerate the Python code for the wire contract into the SDK package.

    python proto/generate.py            # write client/vidseek/v1/*_pb2*.py(i)
    python proto/generate.py --out DIR  # write elsewhere (the freshness test does this)

Generated files are committed and never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "client"


def generate(out: Path) -> list[Path]:
    """Run protoc on every .proto under proto/vidseek; returns the generated files."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        # Typed stubs for the service (mypy-protobuf's protoc plugin, on PATH).
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out / "vidseek" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args()
    for path in generate(ns.out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
