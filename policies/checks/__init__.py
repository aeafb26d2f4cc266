"""Fast, CPU, inline checks that policy rules use (docs/policies.md): each finds spans in a text."""
