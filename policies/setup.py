"""The gateway's policy engine, from the configuration's ``policies`` section."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from config import PoliciesConfig
from policies import pack
from policies.audit import AuditLog, PolicyMetrics
from policies.checks.registry import all_checks
from policies.engine import PolicyEngine


def build_engine(config: PoliciesConfig, registry: CollectorRegistry) -> PolicyEngine | None:
    """The engine with the configured packs (built-in names or files); None when no pack is configured.
    Raises ConfigError naming the pack file, the rule, the key and the line of any problem."""
    if not config.packs:
        return None
    checks = all_checks()
    packs = [pack.load(name, frozenset(checks)) for name in config.packs]
    return PolicyEngine(packs, checks, AuditLog(config.audit_path), PolicyMetrics(registry),
                        config.stream_window_chars, config.blocked_answer, config.stream_hold)  # fmt: skip
