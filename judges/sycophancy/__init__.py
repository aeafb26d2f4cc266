"""Sycophancy (docs/judges.md section 2): the Adjusted Sycophancy Score from probes, and live-traffic re-asks."""
