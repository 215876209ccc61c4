"""Security parts shared by the labs and both capstones: adversarial examples, PII detection and redaction,
prompt-injection screening, the guard layer and the red-team suite."""
