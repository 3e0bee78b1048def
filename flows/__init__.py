"""Prefect flows, the CLI and the run folder."""

from lifecycle.heap import return_freed_pages

# before any module of the package loads polars, whose allocator reads its settings once
return_freed_pages()
