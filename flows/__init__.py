"""Prefect flows, the CLI and the run folder."""
