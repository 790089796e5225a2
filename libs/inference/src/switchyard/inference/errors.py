"""Errors on the inference contract: a gRPC status code with a google.rpc.ErrorInfo detail.

Adapters raise `InferenceError`; the servicer turns it into a rich gRPC status
(AIP-193 style), and callers turn a failed call back into an `InferenceError`
with `from_rpc_error`, so the reason (e.g. CONTEXT_LENGTH_EXCEEDED) survives the hop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from switchyard.inference.v1 import inference_pb2 as pb

DOMAIN = "switchyard.dev"
_DETAILS_KEY = "grpc-status-details-bin"

Reason: TypeAlias = pb.ErrorReason.ValueType


class InferenceError(Exception):
    """A failure with its gRPC code, a reason from the contract and a message for humans."""

    __slots__ = ("code", "message", "metadata", "reason")

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: Reason,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def reason_name(self) -> str:
        return pb.ErrorReason.Name(self.reason)

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason_name, domain=DOMAIN, metadata=self.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])
        result: grpc.Status = rpc_status.to_status(status)
        return result

    def __repr__(self) -> str:
        return f"InferenceError({self.code.name}, {self.reason_name}, {self.message!r})"

    # Constructors for the cases every adapter meets.
    @classmethod
    def invalid(cls, message: str, param: str | None = None) -> InferenceError:
        meta = {"param": param} if param else None
        return cls(grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST, message, meta)

    @classmethod
    def unsupported(cls, message: str, param: str | None = None) -> InferenceError:
        meta = {"param": param} if param else None
        return cls(grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_CONSTRAINT, message, meta)

    @classmethod
    def context_length(cls, message: str) -> InferenceError:
        return cls(grpc.StatusCode.INVALID_ARGUMENT, pb.CONTEXT_LENGTH_EXCEEDED, message)

    @classmethod
    def overloaded(cls, message: str) -> InferenceError:
        return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ENGINE_OVERLOADED, message)

    @classmethod
    def unavailable(cls, message: str) -> InferenceError:
        return cls(grpc.StatusCode.UNAVAILABLE, pb.ENGINE_UNAVAILABLE, message)

    @classmethod
    def engine_failed(cls, message: str) -> InferenceError:
        return cls(grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR, message)

    @classmethod
    def model_not_found(cls, model: str) -> InferenceError:
        return cls(
            grpc.StatusCode.NOT_FOUND,
            pb.MODEL_NOT_FOUND,
            f"model {model!r} is not served here",
            {"param": "model"},
        )


def from_rpc_error(error: grpc.aio.AioRpcError) -> InferenceError:
    """The `InferenceError` behind a failed call (reason UNSPECIFIED when it carries none)."""
    code = error.code()
    message = error.details() or ""
    for key, value in error.trailing_metadata() or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN:
                return InferenceError(code, _reason(info.reason), message, dict(info.metadata))
    return InferenceError(code, pb.ERROR_REASON_UNSPECIFIED, message)


def _reason(name: str) -> Reason:
    try:
        return pb.ErrorReason.Value(name)
    except ValueError:  # a reason from a newer contract
        return pb.ERROR_REASON_UNSPECIFIED
