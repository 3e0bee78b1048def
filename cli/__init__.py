"""The console commands: each parses its options, checks the inputs, and launches a flow or a plain function."""
