"""A local, faithful stand-in for the Frigade flow-state API."""
