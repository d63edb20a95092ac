"""Durable state under ``<project>/.bmad-trio/``: paths, the SQLite store, run files, the run lock, redaction."""
