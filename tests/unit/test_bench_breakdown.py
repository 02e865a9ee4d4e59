"""bench/breakdown.py: py-spy raw lines → stacks → one stage each (no profiling here)."""

from __future__ import annotations

import pytest
from bench.breakdown import (
    LOOP,
    RULES,
    STAGES,
    WORKERS,
    Frame,
    Profile,
    Rule,
    classify,
    parse_frame,
    parse_raw_line,
    thread_group,
    thread_kind,
)

MAIN = (
    "thread (1234): MainThread;<module> (herald/cli/__main__.py);Server.run (uvicorn/server.py);"
    "run (asyncio/runners.py);Runner.run (asyncio/runners.py)"
)
ASGI = MAIN + (
    ";RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py)"
    ";ServerErrorMiddleware.__call__ (starlette/middleware/errors.py)"
    ";SecurityHeaders.__call__ (herald/server/middleware.py)"
    ";publish_one (herald/server/api.py)"
)
SQLITE = (
    "thread (1300): Thread-7;Thread._bootstrap (threading.py);"
    "Thread._bootstrap_inner (threading.py);Thread.run (threading.py);"
    "_connection_worker_thread (aiosqlite/core.py)"
)


def stage_of(line: str) -> str:
    stack = parse_raw_line(line)
    assert stack is not None
    return classify(stack.frames)


def test_parse_raw_line_with_thread_and_count() -> None:
    stack = parse_raw_line(ASGI + ";SignedRequest.verify (herald/core/signatures.py) 17\n")
    assert stack is not None
    assert (stack.tid, stack.thread, stack.count) == ("1234", "MainThread", 17)
    assert stack.frames[0] == Frame("<module>", "herald/cli/__main__.py")
    assert stack.frames[-1] == Frame("SignedRequest.verify", "herald/core/signatures.py")


def test_parse_frame_with_and_without_line_numbers() -> None:
    assert parse_frame("encrypt (herald/crypto/aead.py:42)") == Frame(
        "encrypt", "herald/crypto/aead.py"
    )
    assert parse_frame("<lambda> (x.py)") == Frame("<lambda>", "x.py")
    assert parse_frame("garbage") == Frame("garbage", "?")


@pytest.mark.parametrize("line", ["", "   ", "no count here", "a (b.py) x"])
def test_malformed_lines_are_refused(line: str) -> None:
    assert parse_raw_line(line) is None


def test_parse_without_thread_prefix() -> None:
    stack = parse_raw_line("<module> (a.py);f (b.py) 3")
    assert stack is not None
    assert stack.tid is None
    assert [f.func for f in stack.frames] == ["<module>", "f"]


@pytest.mark.parametrize(
    ("tail", "stage"),
    [
        ("", "handler"),
        (";_verify_crypto (herald/service/signatures.py)", "signature"),
        (";parse_dictionary (http_sf/parse.py)", "signature"),
        (";OKPAlgorithm.verify (jwt/algorithms.py)", "jwt"),
        (";TokenVerifier.verify (herald/crypto/tokens.py)", "jwt"),
        (";Runtime.verify_access (herald/service/runtime.py)", "jwt"),
        (";NonceStore.claim (herald/state/nonces.py)", "nonce"),
        (";KeyRing.seal (herald/crypto/keyring.py);seal (herald/crypto/aead.py)", "encrypt"),
        (";SqlStore.publish (herald/storage/sql.py)", "commit"),
        (";Connection.execute (sqlalchemy/engine/base.py)", "commit"),
        (";route (herald/service/routing.py)", "routing"),
        (";Hub.publish (herald/streams/hub.py)", "fanout"),
        (";MemoryBus.publish (herald/bus/memory.py)", "fanout"),
        (";Metrics.observe (herald/observability/metrics.py)", "observability"),
        (";admit_app (herald/service/throttle.py)", "ratelimit"),
    ],
)
def test_the_innermost_matching_rule_decides(tail: str, stage: str) -> None:
    assert stage_of(f"{ASGI}{tail} 1") == stage


def test_unmatched_stdlib_frames_pass_on_to_their_caller() -> None:
    # json and hashlib match no rule: the signature module calling them owns the sample.
    line = ASGI + ";_digest (herald/core/signatures.py);dumps (json/__init__.py) 1"
    assert stage_of(line) == "signature"


def test_audit_absorbs_the_sql_of_its_append() -> None:
    line = (
        ASGI + ";SqlStore.publish (herald/storage/sql.py);SqlStore._append (herald/storage/sql.py)"
        ";AsyncConnection.execute (sqlalchemy/ext/asyncio/engine.py) 1"
    )
    assert stage_of(line) == "audit"
    # ...but not the SQL of the rest of the commit.
    plain = ASGI + ";SqlStore.publish (herald/storage/sql.py);_insert_many (herald/storage/sql.py)"
    assert stage_of(plain + ";AsyncConnection.execute (sqlalchemy/ext/asyncio/engine.py) 1") == (
        "commit"
    )
    assert stage_of(ASGI + ";leaf_hash (herald/audit/merkle.py) 1") == "audit"


def test_reads_made_by_a_stage_are_that_stage_and_thread_start_too() -> None:
    # The token's liveness check reads the app; a new pool connection starts its thread.
    line = (
        ASGI + ";LiveCheck.app_state (herald/state/live.py)"
        ";SqlStore.get_app (herald/storage/sql.py);SqlStore._tx (herald/storage/sql.py)"
        ";Connection.__await__ (aiosqlite/core.py);Thread.start (threading.py)"
        ";Event.wait (threading.py);Condition.wait (threading.py) 1"
    )
    assert stage_of(line) == "jwt"
    key = ASGI + ";verify_request (herald/service/signatures.py)"
    assert stage_of(key + ";SqlStore.get_app_key (herald/storage/sql.py) 1") == "signature"
    # The handler does not absorb: the publish's own transaction stays "commit".
    handler = ASGI + ";publish (herald/service/messages.py)"
    assert stage_of(handler + ";SqlStore.publish (herald/storage/sql.py) 1") == "commit"


def test_ssl_frames_are_tls_even_below_http() -> None:
    line = ASGI + ";RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py)"
    assert stage_of(line + " 1") == "http"
    assert stage_of(line + ";SSLObject.write (ssl.py) 1") == "tls"


def test_runner_run_self_time_is_the_event_loop_only_as_the_leaf() -> None:
    assert stage_of(MAIN + " 5") == "loop"
    # Runner.run further out is every stack's ancestor: it must not capture anything.
    assert stage_of(MAIN + ";mystery (somewhere/else.py) 5") == "other"


def test_shared_outer_frames_match_no_rule() -> None:
    assert stage_of("thread (1): MainThread;<module> (herald/cli/__main__.py) 1") == "other"
    assert stage_of("thread (1): MainThread;Server.run (uvicorn/server.py) 1") == "other"
    assert stage_of("thread (1): MainThread 1") == "other"  # no Python frame at all


def test_sqlite_worker_thread_is_commit_and_not_the_loop() -> None:
    stack = parse_raw_line(SQLITE + " 9")
    assert stack is not None
    assert classify(stack.frames) == "commit"
    assert thread_group(stack) == WORKERS
    assert thread_kind(stack) == "sqlite"
    main = parse_raw_line(ASGI + " 1")
    assert main is not None
    assert (thread_group(main), thread_kind(main)) == (LOOP, "event loop")


def test_extra_rules_extend_the_table() -> None:
    frames = [Frame("Runner.run", "asyncio/runners.py"), Frame("work", "mylib/hot.py")]
    assert classify(frames) == "other"
    assert classify(frames, (*RULES, Rule("handler", r"(?:^|/)mylib/"))) == "handler"
    assert classify(frames, (Rule("jwt", r"hot\.py", func=r"work"),)) == "jwt"
    assert classify(frames, (Rule("jwt", r"hot\.py", func=r"other"),)) == "other"


def test_every_rule_names_a_known_stage() -> None:
    assert {rule.stage for rule in RULES} <= set(STAGES)
    for rule in RULES:
        assert set(rule.absorbs) <= set(STAGES)


def test_profile_counts_by_group_stage_and_other_frames() -> None:
    profile = Profile()
    profile.add_lines(
        [
            MAIN + " 4\n",
            ASGI + ";_verify_crypto (herald/service/signatures.py) 6\n",
            MAIN + ";mystery (somewhere/else.py) 2\n",
            SQLITE + " 10\n",
            "not a stack line\n",
            "\n",
        ]
    )
    assert profile.samples == 22
    assert profile.malformed == 1
    assert profile.by_group_stage[LOOP] == {"loop": 4, "signature": 6, "other": 2}
    assert profile.by_group_stage[WORKERS] == {"commit": 10}
    assert profile.other_leaf == {"mystery (somewhere/else.py)": 2}
    assert profile.group_samples() == {LOOP: 12, WORKERS: 10}
    assert profile.tids == {"event loop": {"1234"}, "sqlite": {"1300"}}


def test_without_py_spy_it_says_so_in_one_line_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import breakdown

    monkeypatch.setattr(breakdown, "find_pyspy", lambda: None)
    assert breakdown.main(["--quick"]) != 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "py-spy not found" in out
