"""Policy: turns each received message into plans, one per group of recipients."""
