"""Switchyard shared code: logging, telemetry, settings and gRPC error helpers."""
