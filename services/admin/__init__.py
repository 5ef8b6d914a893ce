"""Admin API: HTTP access to what the CLI manages, behind bearer tokens."""
