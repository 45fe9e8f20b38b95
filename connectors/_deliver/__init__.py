"""The deliver stage: the connections (httpx client and transport, auth flows, circuit breaker, ``max_rate``,
deadlines, retries) and the workers that send the outbox's jobs and report each outcome back to the store.
It never decides what is owed."""
