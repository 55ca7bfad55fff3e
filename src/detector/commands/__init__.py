"""One module per ``detector`` command."""
