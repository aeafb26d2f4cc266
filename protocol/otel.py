"""The OpenTelemetry conventions the gateway's spans and the judges' events share: the semantic-convention
schema, the service resource, and which exporter the standard ``OTEL_*`` variables ask for."""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"


def requested_exporter(signal: str) -> str | None:
    """ "otlp" or "console" when the standard variables ask to export ``signal`` (TRACES, LOGS), else None."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    name = os.environ.get(f"OTEL_{signal}_EXPORTER", "").lower()
    endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if name == "none" or (not name and not endpoint):
        return None
    return "console" if name == "console" else "otlp"


def service_resource() -> Resource:
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "medic-gateway")})
