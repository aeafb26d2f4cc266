"""Information-fidelity judges (docs/judges.md section 1): ``cef-lite`` on CPU, ``cef-llm`` with a judge model."""
