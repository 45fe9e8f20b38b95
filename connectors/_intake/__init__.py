"""The intake stage: whatever arrives (lines of a file, stdin, a forked reader) as batches of inbound events.

Webhook intake lives with the service (``shipmap.connectors._serve``)."""
