"""Redis Streams event log: keys, idempotent group-committed appends, reads, tails, groups."""
