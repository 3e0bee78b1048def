"""The commands' two consoles."""

from __future__ import annotations

from rich.console import Console

# soft wrap: a message stays one line however narrow the terminal, so it can be grepped and pasted
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
