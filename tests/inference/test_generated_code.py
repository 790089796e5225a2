"""The committed generated code is exactly what `make proto` produces from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "libs" / "inference" / "src"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    sources = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    assert sources, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *sources,
        ],
        check=True,
        capture_output=True,
        env={"PATH": str(Path(sys.executable).parent)},
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "protoc produced nothing"
    stale = [str(rel) for rel, data in fresh.items() if (GENERATED / rel).read_bytes() != data]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
    committed = {
        p.relative_to(GENERATED)
        for p in GENERATED.rglob("*_pb2*.py*")
        if "__pycache__" not in p.parts
    }
    assert committed == set(fresh), "generated files without a .proto (or missing ones)"


def test_the_contract_is_versioned() -> None:
    from switchyard.inference.v1 import inference_pb2

    assert inference_pb2.DESCRIPTOR.package == "switchyard.inference.v1"
    assert inference_pb2.DESCRIPTOR.name == "switchyard/inference/v1/inference.proto"
