"""Audit: keeps every mail.* and config.* event, queryable by message, type and time."""
