"""The composition root: the `knack` command, the one place that opens a device's parts (wiring), and the
device session that `record`, `tui`, `robot` and `demo` all run."""
