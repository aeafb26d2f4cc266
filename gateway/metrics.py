"""Prometheus metrics of the gateway: GenAI semantic-convention names where they exist, ours otherwise.

Label values are bounded: models come from the configuration or, in pass-through mode, from a capped set
(the rest are "other"); tenants come from the configuration. Never a request id, key or text.
docs/metrics.md lists every metric with its labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from upstreams.metrics import DURATION_BUCKETS, ForwardingMetrics, LoopCounter, LoopGauge, LoopHistogram

# Bucket boundaries advised by the OpenTelemetry GenAI semantic conventions (v1.37.0).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
OTHER = "other"

GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


class Metrics:
    """Every metric the gateway exports, on a registry of its own (no global state)."""

    def __init__(self, max_model_labels: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models: set[str] = set()
        self._max_models = max_model_labels
        r = self.registry
        self.operation_duration = LoopHistogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of calls to upstream model servers, to the last byte.",
            [*GENAI, "error_type"], DURATION_BUCKETS, r,
        )  # fmt: skip
        self.token_usage = LoopHistogram(
            "gen_ai_client_token_usage",
            "Tokens used per request, as reported by the upstream.",
            [*GENAI, "gen_ai_token_type"], TOKEN_BUCKETS, r,
        )  # fmt: skip
        self.time_to_first_token = LoopHistogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from request arrival to the first content chunk sent to the client (streams).",
            GENAI, TTFT_BUCKETS, r,
        )  # fmt: skip
        self.request_duration = LoopHistogram(
            "gen_ai_server_request_duration_seconds",
            "Time from request arrival at the gateway to the last byte sent to the client.",
            [*GENAI, "error_type"], DURATION_BUCKETS, r,
        )  # fmt: skip
        self.requests = LoopCounter(
            "medic_gateway_requests",
            "Requests answered, by endpoint, model, upstream, tenant and HTTP status code.",
            ["endpoint", "model", "upstream", "tenant", "status_code"], r,
        )  # fmt: skip
        self.overhead = LoopHistogram(
            "medic_gateway_overhead_seconds",
            "Time the gateway itself adds to a request: total time less time waiting on the upstream.",
            ["endpoint"], OVERHEAD_BUCKETS, r,
        )  # fmt: skip
        self.forwarding = ForwardingMetrics(r)  # upstream latency, retries and fallbacks
        self.in_flight = LoopGauge("medic_gateway_requests_in_flight", "Requests being handled now.", ["endpoint"], r)
        self.client_disconnects = LoopCounter(
            "medic_gateway_client_disconnects",
            "Streams the client abandoned before the end; the upstream request was cancelled.",
            ["endpoint", "model"], r,
        )  # fmt: skip

        self.sampling_decisions = LoopCounter(
            "medic_gateway_sampling_decisions",
            "Sampling decisions: sampled by trigger (rate, header, policy), not_sampled, over_budget, not_applicable.",
            ["decision"], r,
        )  # fmt: skip
        self.samples_dropped = LoopCounter(
            "medic_gateway_samples_dropped",
            "Sampled exchanges that never reached the queue, by reason.",
            ["reason"], r,
        )  # fmt: skip
        self.samples_enqueued = Counter("medic_gateway_samples_enqueued", "Samples handed to the queue.", registry=r)
        self.sample_queue_errors = Counter(
            "medic_gateway_sample_queue_errors", "Puts to the sample queue that failed (the samples are kept and "
            "sent again).", registry=r,
        )  # fmt: skip
        self.sample_buffer = Gauge(
            "medic_gateway_sample_buffer", "Samples waiting in the gateway's buffer for the queue.", registry=r
        )

    def model_label(self, model: str) -> str:
        """The model name as a label value, bounded: past the cap, new names become "other"."""
        if model in self._models:
            return model
        if len(self._models) < self._max_models:
            self._models.add(model)
            return model
        return OTHER

    def allow_models(self, names: list[str]) -> None:
        """Configured model names are always their own label value."""
        self._models.update(names)
        self._max_models += len(names)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
