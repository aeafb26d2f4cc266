"""Which upstreams serve a model, in order: the first route, then its fallbacks."""

from __future__ import annotations

from config import WILDCARD, GatewayConfig, UpstreamConfig
from protocol.errors import ModelNotFound
from protocol.tasks import Task
from upstreams.forwarding import Target
from upstreams.http import HttpUpstream, Upstream


class Router:
    def __init__(self, config: GatewayConfig, forward_client_auth: bool) -> None:
        self.upstreams: dict[str, Upstream] = {
            name: build_upstream(name, upstream, forward_client_auth) for name, upstream in config.upstreams.items()
        }
        self._routes = {
            model: [(self.upstreams[r.upstream], r.model) for r in spec.routes] for model, spec in config.models.items()
        }
        self._tasks = {model: spec.task for model, spec in config.models.items()}
        self.wildcard = WILDCARD in self._routes

    def targets(self, model: str) -> list[Target]:
        routes = self._routes.get(model) or self._routes.get(WILDCARD)
        if routes is None:
            raise ModelNotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
        return [Target(upstream, name or model) for upstream, name in routes]

    def task(self, model: str) -> Task | None:
        """The task configured for the model entry that ``targets`` routes by: the wildcard's for unnamed models."""
        return self._tasks[model] if model in self._tasks else self._tasks.get(WILDCARD)

    def named_models(self) -> list[str]:
        return [name for name in self._routes if name != WILDCARD]


def build_upstream(name: str, config: UpstreamConfig, forward_client_auth: bool) -> Upstream:
    if config.direct:
        return HttpUpstream(name, config, forward_client_auth)
    from upstreams.translated import TranslatedUpstream  # litellm only when such a provider is configured

    return TranslatedUpstream(name, config)
