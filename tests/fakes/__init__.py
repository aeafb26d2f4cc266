"""Test doubles and helpers for end-to-end tests: a scriptable fake upstream, a gateway server, raw HTTP."""
