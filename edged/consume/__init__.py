"""Consuming one stream through one consumer group: read, run, ack, reclaim, lease, hand back."""
