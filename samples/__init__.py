"""The bundled sample exports under ``data/``: one per preset, each with the target state it means.

``samples.exports`` generates them from a fixed seed; ``data/make_samples.py`` writes them and the
tests regenerate and compare. Not shipped: it lives beside the code so that tests, bench and the
script import one generator.
"""
