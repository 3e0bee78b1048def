"""Frigade API edge: wire models, state rules, catalog, client."""
