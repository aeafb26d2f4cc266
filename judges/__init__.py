"""Judge workers: consume sampled exchanges and compute the clinical indicators (see docs/judges.md)."""
