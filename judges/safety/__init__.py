"""Safety (docs/judges.md section 3): harmfulness, refusal and over-refusal, active safety probes."""
