"""Configuration: typed objects, the versioned write path, the live in-process copy, auth, tags."""
