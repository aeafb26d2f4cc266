"""Policies shared by the gateway (inline rules) and the judges (rules on aggregated indicators)."""
