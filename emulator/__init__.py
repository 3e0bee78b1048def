"""A local, faithful stand-in for the Frigade flow-state API.

- ``emulator.app``: ``EmulatorConfig`` and ``create_app(config)`` (the ASGI app);
- ``emulator.server``: the command line, ``main(argv)`` (``python -m emulator``);
- ``emulator.embedded``: ``EmbeddedEmulator``, the server as a child process for the job and the tests;
- ``emulator.store``: the SQLite storage.

Nothing is imported here, so that ``import emulator.embedded`` stays cheap for callers.
"""
