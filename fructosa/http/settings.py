"""What lmaster's HTTP server needs to know; the config file's ``[http]`` section maps onto it."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1 << 20


@dataclass(frozen=True)
class HttpSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 8080),)
    """(address, port) pairs to listen on; port 0 picks a free one (tests)."""
    token: bytes | None = None
    """Bearer token every ``/api`` request must carry; None: no token (only sensible on loopback)."""
    public_read: bool = False
    """Let GET and HEAD requests through without the token (a read-only wall display)."""
    max_connections: int = 512
    """Open connections; the next one is answered 503 and closed at accept."""
    max_body: int = MIB
    """Request bodies larger than this get 413 before anything reads them."""
    idle_timeout: float = 30.0
    """Seconds a keep-alive connection may sit idle between requests (aiohttp's ``keepalive_timeout``)."""
    request_timeout: float = 10.0
    """Seconds a new connection has to deliver its first request's headers (slow clients are cut off)."""
    heartbeat_slack: float = 0.0
    """Added to two heartbeat intervals before a node counts as late."""
    static_max_age: int = 86_400
    """Cache lifetime of the vendored, versioned files (``/static/vendor/``); the page's own files revalidate."""
    extra_headers: dict[str, str] = field(default_factory=dict)
    nodes_cache_seconds: float = 0.0
    """``/api/nodes`` answers are reused for this long (per query): many pollers cost one build per period;
    while answers are reused, building them takes at most about 5 % of the loop (:class:`.state.BuildBudget`)."""
    tls_cert: str | None = None
    """Serve HTTPS with this certificate (PEM) and ``tls_key``; None: plain HTTP."""
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections}")
        if self.max_body < 0:
            raise ValueError(f"max_body must not be negative, not {self.max_body}")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the HTTP token must have at least 16 bytes")
        for address, port in self.listen:
            if not 0 <= port < 65536:
                raise ValueError(f"port {port} of {address!r} is not a TCP port")
