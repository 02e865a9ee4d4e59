"""Short-lived shared state: stream tickets (and later nonces, revocations, rate limits)."""

__all__: list[str] = []
