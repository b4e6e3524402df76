"""The shells: all I/O around the pure projections (runner, supervisor, actor registry)."""
