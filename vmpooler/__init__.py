"""Composition root: settings loading, CLI and process wiring for the vmpooler service."""
