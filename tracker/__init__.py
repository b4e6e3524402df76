"""tracker: ad impression tracking and view-through attribution on Redis Streams."""
