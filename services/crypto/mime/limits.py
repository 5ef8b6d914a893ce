"""Limits on hostile input, far above what any legitimate message needs.

Each limit bounds the memory and time that one message can cost the parser; exceeding
one raises MimeLimitError, never a partial result.
"""

# Exim's default for the whole header block (header_maxsize) is also 1 MiB.
MAX_HEADER_BLOCK_BYTES = 1024 * 1024

# Long relay chains carry some tens of Received fields; a thousand fields is hostile.
MAX_HEADER_FIELDS = 1000

# Multipart and message/rfc822 levels below the top-level entity.
MAX_NESTING_DEPTH = 32

# Body parts in one message, counted over every multipart.
MAX_BODY_PARTS = 10_000
