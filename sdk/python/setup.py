"""Builds the `trustmesh` package with its protobuf and gRPC stubs generated from `proto/`.

The stubs (`trustmesh.v1.*_pb2`, `*_pb2_grpc`, `trustmesh.events.v1.*`) are written into the build
directory only, never into the source tree: the proto files are the one source of truth. The proto
root is `$TRUSTMESH_PROTO_DIR`, else `proto/` next to this file (an sdist), else the repository's
`proto/` two levels up.
"""

import importlib.metadata
import importlib.resources
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_root() -> Path:
    candidates = []
    if os.environ.get("TRUSTMESH_PROTO_DIR"):
        candidates.append(Path(os.environ["TRUSTMESH_PROTO_DIR"]))
    candidates += [HERE / "proto", HERE.parent.parent / "proto"]
    for candidate in candidates:
        if (candidate / "trustmesh" / "v1").is_dir():
            return candidate
    raise RuntimeError(
        "cannot find the trustmesh proto files; set TRUSTMESH_PROTO_DIR to the repository's proto/"
    )


def generate(root: Path, out: Path) -> None:
    """Runs grpcio-tools' protoc over every .proto under `root` into `out`."""
    from grpc_tools import protoc

    include = importlib.resources.files("grpc_tools") / "_proto"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on the trustmesh proto files")
    package = out / "trustmesh"
    for generated in package.rglob("*_pb2.py"):
        directory = generated.parent
        while directory != package:
            (directory / "__init__.py").touch()
            directory = directory.parent


class BuildPyWithStubs(build_py):
    """`build_py` that also generates the stubs into the build directory."""

    def run(self):
        super().run()
        generate(proto_root(), Path(self.build_lib))


setup(
    cmdclass={"build_py": BuildPyWithStubs},
    install_requires=[
        f"grpcio>={importlib.metadata.version('grpcio-tools')}",
        f"protobuf>={importlib.metadata.version('protobuf')}",
        "pandas>=1.5",
    ],
)
