"""The console commands: each parses its options, checks the inputs, and launches a flow or a plain function."""

from lifecycle.heap import return_freed_pages

# before any module of the package loads polars, whose allocator reads its settings once
return_freed_pages()
