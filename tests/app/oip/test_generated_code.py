"""The checked-in gRPC modules are what scripts/generate-grpc makes of the checked-in .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
PACKAGE = Path("app/oip/proto")


def test_generated_grpc_code_is_up_to_date(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/generate-grpc"), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    stale = [
        name for name in GENERATED
        if (tmp_path / PACKAGE / name).read_bytes() != (REPO_ROOT / PACKAGE / name).read_bytes()
    ]  # fmt: skip
    assert not stale, f"{stale} differ from what the .proto generates: run `.venv/bin/python scripts/generate-grpc` and commit"
    assert sorted(p.name for p in (tmp_path / PACKAGE).iterdir()) == sorted(GENERATED)


def test_the_messages_live_in_a_pool_of_their_own():
    """Other packages (tritonclient.grpc, kserve) register the same inference.* names in protobuf's
    default pool: ours must not, or whichever is imported second fails."""
    from google.protobuf import descriptor_pool

    from app.oip.proto import grpc_predict_v2_pb2 as pb

    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    import tritonclient.grpc  # registers inference.ModelInferRequest in the default pool

    assert descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest") is not pb.ModelInferRequest.DESCRIPTOR
    assert tritonclient.grpc.service_pb2.ModelInferRequest.DESCRIPTOR.full_name == pb.ModelInferRequest.DESCRIPTOR.full_name
