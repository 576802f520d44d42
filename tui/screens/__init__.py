"""One module per screen of `knack tui`."""
