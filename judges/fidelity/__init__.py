"""Information-fidelity judges (docs/judges.md section 1): ``cef-lite`` on CPU from extracted clinical facts."""
