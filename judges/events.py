"""Judge results as OpenTelemetry `gen_ai.evaluation.result` events, parented to the evaluated request.

The gateway puts its span's W3C traceparent into every sample; each event carries that context, so a
trace viewer shows the evaluation under the request it judged, however much later and wherever it ran.
Events are exported when the standard variables ask for it (OTEL_LOGS_EXPORTER=otlp|console, or an OTLP
endpoint in OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_LOGS_ENDPOINT); otherwise nothing is built.
They carry scores and labels, never clinical text: the evidence stays in the results store.
"""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import Logger, LoggerProvider
from opentelemetry.propagate import extract
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter, LogRecordExporter

from pipeline.sample import Result
from protocol.otel import SCHEMA_URL, requested_exporter, service_resource

EVENT = "gen_ai.evaluation.result"


class EvaluationEvents:
    def __init__(self, provider: LoggerProvider | None) -> None:
        self.provider = provider
        self._logger: Logger | None = (
            provider.get_logger("medic-gateway.judges", schema_url=SCHEMA_URL) if provider is not None else None
        )

    def emit(self, results: list[Result]) -> None:
        if self._logger is None:
            return
        for result in results:
            context = extract({"traceparent": result.traceparent}) if result.traceparent else None
            self._logger.emit(event_name=EVENT, context=context, attributes=attributes(result))

    def shutdown(self) -> None:
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def attributes(result: Result) -> dict[str, Any]:
    values: dict[str, Any] = {
        "gen_ai.evaluation.name": result.indicator,
        "gen_ai.request.model": result.model,
        "medic_gateway.request_id": result.request_id,
        "medic_gateway.judge.method": result.method,
        "gen_ai.evaluation.explanation": f"{result.method}: {len(result.evidence)} evidence item(s) in the "
        f"results store (GET /v1/evaluations/{result.request_id})",
    }
    if result.score is not None:
        values["gen_ai.evaluation.score.value"] = result.score
    if result.label is not None:
        values["gen_ai.evaluation.score.label"] = result.label
    return values


def configure(provider: LoggerProvider | None = None) -> EvaluationEvents:
    """Events from the standard OTEL_* environment, or to an explicit provider (tests)."""
    return EvaluationEvents(provider if provider is not None else _provider_from_environment())


def _provider_from_environment() -> SdkLoggerProvider | None:
    exporter_name = requested_exporter("LOGS")
    if exporter_name is None:
        return None
    exporter: LogRecordExporter
    if exporter_name == "console":
        exporter = ConsoleLogRecordExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter()  # endpoint, headers and timeout from the OTEL_* variables
    provider = SdkLoggerProvider(resource=service_resource())
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider
