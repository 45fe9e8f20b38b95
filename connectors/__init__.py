"""shipmap.connectors: auth schemes, HTTP delivery, the journal, the CLI and the sandbox server."""
