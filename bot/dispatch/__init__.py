"""Draining the outbox to the platforms: the dispatcher and the parts it is made of, one concern each.

`dispatcher` runs the chats' workers; `pacing` keeps every send inside the platforms' published windows;
`batching` decides, at each send opportunity, what the chat's backlog becomes; `outage` pauses sending
while storage is away.
"""
