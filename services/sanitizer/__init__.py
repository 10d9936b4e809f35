"""The sanitizer service: prompt checks and redaction, output filtering."""
