"""Delivery: hands processed mail to the next hop, or to the outbox folder."""
