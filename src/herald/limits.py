"""Every size, count and time limit of Herald, named and explained in one place.

Limits that operators may want to change are also settings (see :mod:`herald.config`);
the values here are their defaults or hard ceilings that settings cannot exceed.
"""

from __future__ import annotations

__all__ = [
    "ACCESS_TOKEN_TTL_DEFAULT",
    "ACCESS_TOKEN_TTL_MAX",
    "AUDIT_GROUP_MAX",
    "BATCH_MAX_MESSAGES",
    "CLIENT_ASSERTION_AUD_MAX",
    "CLIENT_ASSERTION_JTI_MAX",
    "CLIENT_ASSERTION_LIFETIME_MAX",
    "CLIENT_ASSERTION_MAX",
    "CLUSTER_RUN_NODES_MAX",
    "CLUSTER_RUN_START_WAIT",
    "CLUSTER_RUN_STOP_WAIT",
    "DATA_MAX_DEPTH",
    "DEVICES_PER_RECIPIENT_MAX",
    "E2E_PAYLOADS_MAX",
    "EVENT_LOOP_LAG_INTERVAL",
    "EVENT_LOOP_LAG_WINDOW",
    "GC_YOUNG_THRESHOLD",
    "HEARTBEAT_INTERVAL",
    "HISTORY_PAGE_MAX",
    "IDEMPOTENCY_KEY_MAX",
    "IDEMPOTENCY_TTL",
    "JWT_LEEWAY",
    "LISTEN_BACKLOG",
    "MAX_BATCH_BODY_BYTES",
    "MAX_BODY_BYTES",
    "MESSAGE_TTL_MAX",
    "NODE_HEARTBEAT_INTERVAL",
    "NODE_HEARTBEAT_TTL",
    "NODE_LAG_COUNT_MAX",
    "NODE_STATUS_MAX",
    "OPERATOR_NAME_MAX",
    "OPERATOR_PASSWORD_MAX",
    "OPERATOR_PASSWORD_MIN",
    "OPERATOR_TOKEN_TTL",
    "OPERATOR_TOKEN_TTL_MAX",
    "PUBLISH_GROUP_MAX",
    "RECIPIENTS_MAX",
    "RECIPIENT_ID_MAX",
    "REDIS_PIPELINE_MAX",
    "STREAM_FRAME_MAX",
    "STREAM_QUEUE_MAX",
    "STREAM_TICKET_TTL",
    "SUBSCRIBER_TOKEN_TTL_DEFAULT",
    "SUBSCRIBER_TOKEN_TTL_MAX",
    "TITLE_MAX",
    "TOKEN_CACHE_SIZE",
    "TOKEN_REQUEST_MAX_BYTES",
    "TOPIC_MAX",
    "TOPIC_PATTERNS_MAX",
    "UNKNOWN_KID_RELOAD_INTERVAL",
]

#: Largest request body for single-message routes, checked before any parsing (bytes).
MAX_BODY_BYTES = 64 * 1024
#: Largest body of ``POST /v1/messages:batch`` (up to 1,000 messages of ~1 KiB each).
MAX_BATCH_BODY_BYTES = 4 * 1024 * 1024
#: Messages per batch request.
BATCH_MAX_MESSAGES = 1000
#: Recipients named in one message.
RECIPIENTS_MAX = 1000
#: Length of one recipient id (the tenant's own identifier for a person or system).
RECIPIENT_ID_MAX = 256
#: Length of a topic name or pattern, in characters.
TOPIC_MAX = 255
#: Topic patterns in one subscriber token or subscribe frame.
TOPIC_PATTERNS_MAX = 32
#: Length of a message title in characters (bodies are bounded by the body cap).
TITLE_MAX = 1024
#: Largest template version number (a 32-bit signed column in every supported database).
TEMPLATE_VERSION_MAX = 2**31 - 1
#: Nesting depth of the ``data`` object: deep nesting is a parser-DoS vector.
DATA_MAX_DEPTH = 16
#: Longest message TTL (seconds): 30 days.
MESSAGE_TTL_MAX = 30 * 24 * 3600
#: Idempotency-Key header length (the IETF draft suggests a UUID; allow some room).
IDEMPOTENCY_KEY_MAX = 255
#: How long an idempotency record answers a retry (seconds).
IDEMPOTENCY_TTL = 24 * 3600

#: Access-token lifetime by default (seconds) and the hard cap.
ACCESS_TOKEN_TTL_DEFAULT = 600
ACCESS_TOKEN_TTL_MAX = 3600
#: Subscriber-token lifetime by default and cap (seconds).
SUBSCRIBER_TOKEN_TTL_DEFAULT = 3600
SUBSCRIBER_TOKEN_TTL_MAX = 24 * 3600
#: Operator tokens (``/v1/admin/login``): short-lived, as a person's session should be.
OPERATOR_TOKEN_TTL = 900
OPERATOR_TOKEN_TTL_MAX = 3600
#: Operator passwords: NIST SP 800-63B asks for at least 8 characters and to allow at least
#: 64; we ask 12 and bound the length so Argon2id's input stays small.
OPERATOR_PASSWORD_MIN = 12
OPERATOR_PASSWORD_MAX = 256
#: Operator login names.
OPERATOR_NAME_MAX = 64
#: Verified tokens a node remembers (by SHA-256) until they expire, so that a client's
#: next requests skip the signature check (``herald.crypto.tokens``); least recently used
#: first out. Revocation is still checked on every request.
TOKEN_CACHE_SIZE = 4096
#: Clock-skew leeway when checking ``exp``/``nbf``/``iat`` (RFC 8725 advice: small).
JWT_LEEWAY = 30
#: A token naming a ``kid`` this node does not know makes it re-read the token-signing keys
#: at once (a key rotated in on another node before this node's periodic reload), but at
#: most once per this many seconds (monotonic), whatever the number of unknown kids: a
#: flood of made-up kids costs at most one database read per interval.
UNKNOWN_KID_RELOAD_INTERVAL = 10.0
#: Largest RFC 7523 client assertion (a JWT, in characters), refused before any parsing. An
#: Ed25519 assertion with the usual claims is ~400 characters.
CLIENT_ASSERTION_MAX = 4096
#: A client assertion's ``exp`` may lie at most this far ahead (seconds, plus the leeway):
#: assertions are one-shot credentials, and their ``jti`` is remembered until ``exp``.
CLIENT_ASSERTION_LIFETIME_MAX = 300
#: Length of a client assertion's ``jti`` (characters).
CLIENT_ASSERTION_JTI_MAX = 255
#: Entries of a client assertion's ``aud`` array.
CLIENT_ASSERTION_AUD_MAX = 8
#: Largest body of ``POST /oauth/token`` (bytes): room for a largest client assertion
#: next to the grant type and a scope of some length.
TOKEN_REQUEST_MAX_BYTES = 6144
#: One-time stream tickets for browsers live this long (seconds).
STREAM_TICKET_TTL = 30

#: Frames queued for one stream connection before it is cut off as a slow consumer.
STREAM_QUEUE_MAX = 1024
#: Largest client frame accepted on a WebSocket (bytes).
STREAM_FRAME_MAX = 16 * 1024
#: Seconds between heartbeats on idle streams (staggered per connection).
HEARTBEAT_INTERVAL = 20.0
#: Seconds between the event-loop lag monitor's wake-ups: each one records how late it
#: fired (``herald_event_loop_lag_seconds``). Ten samples a second cost next to nothing
#: and give ~100 samples per 10-second window, enough for a p99.
EVENT_LOOP_LAG_INTERVAL = 0.1
#: ``herald_event_loop_lag_max_seconds`` is the largest lag of the last this many seconds.
EVENT_LOOP_LAG_WINDOW = 10.0
#: ``herald serve`` runs a young-generation garbage collection after this many net
#: allocations of tracked objects (CPython's default is 700). Fan-out allocates fast, so at
#: 700 objects that live a few tens of milliseconds (frames in flight, request state) survive
#: two young collections and land in the oldest generation; with thousands of open streams
#: (~200 tracked objects each) that generation then holds about a million objects, and each
#: full collection it provokes stops the event loop for 0.5-1 s (bench/soak.py, 5,000
#: subscribers). At 50,000, short-lived objects die by reference counting before a young
#: collection sees them, full collections during steady fan-out stop, and a young collection
#: costs a few milliseconds.
GC_YOUNG_THRESHOLD = 50_000
#: Largest page of topic history served at once.
HISTORY_PAGE_MAX = 1000
#: End-to-end devices one recipient may register.
DEVICES_PER_RECIPIENT_MAX = 32
#: End-to-end payloads (one per recipient device) in one message.
E2E_PAYLOADS_MAX = 256
#: How far ahead ``deliver_at`` may schedule a message (seconds): 30 days.
SCHEDULE_AHEAD_MAX = 30 * 86400
#: Longest window the notification log must cover (frequency-cap periods and
#: de-duplication windows are at most a week).
NOTIFY_LOG_RETENTION = 7 * 86400

#: Seconds between a cluster node's heartbeats in Redis (``herald:node:<name>``).
NODE_HEARTBEAT_INTERVAL = 2.0
#: Seconds a heartbeat lives: three missed beats and the node drops out of
#: ``herald cluster status`` (a SIGKILLed node cannot remove its own key).
NODE_HEARTBEAT_TTL = 3 * NODE_HEARTBEAT_INTERVAL
#: Nodes ``herald cluster status`` lists at most (a bound on the Redis scan).
NODE_STATUS_MAX = 1000
#: Bus lag is counted in messages up to this many; beyond, it shows as this number.
NODE_LAG_COUNT_MAX = 100_000
#: Nodes ``herald cluster run`` starts at most (it is for trying a cluster on one machine).
CLUSTER_RUN_NODES_MAX = 16
#: Seconds ``herald cluster run`` waits for every node's ``/healthz`` before giving up.
CLUSTER_RUN_START_WAIT = 60.0
#: Seconds ``herald cluster run`` gives its nodes to shut down gracefully before SIGKILL
#: (the draining server waits up to 5 s for streams, the dispatcher 5 s for deliveries).
CLUSTER_RUN_STOP_WAIT = 20.0
#: Pending connections a worker's listening socket queues (``herald serve --workers``;
#: uvicorn's own default).
LISTEN_BACKLOG = 2048

#: Redis script calls (nonce claims, rate-limit hits) that arrive together and share one
#: pipeline (``herald.state._redis.PipelinedScript``).
REDIS_PIPELINE_MAX = 256

#: Publish requests one node commits in one transaction when several arrive at once
#: (``herald.service.messages``): group commit, one fsync for the group.
PUBLISH_GROUP_MAX = 128

#: Audit events one node appends in one transaction when several are recorded at once
#: (``herald.service.audit``): one audit-lock acquisition and one commit for the group.
AUDIT_GROUP_MAX = 256
