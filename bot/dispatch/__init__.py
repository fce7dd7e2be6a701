"""The dispatcher: drains the outbox to the platforms, one concern per module (pacing, outages, batching)."""
