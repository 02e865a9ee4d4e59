from __future__ import annotations

import itertools
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from herald.core import ids
from herald.core.ids import UUIDv7Generator, default_generator, parse_message_id, timestamp_ms
from herald.errors import BadRequest

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms
CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# RFC 9562 Appendix A.6: example UUIDv7 for 2022-02-22T14:22:22-05:00.
RFC_EXAMPLE = "017F22E2-79B0-7CC3-98C4-DC0C0C07398F"
RFC_EXAMPLE_MS = 0x017F22E279B0


def seeded_rand(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def const_rand(byte: int) -> Callable[[int], bytes]:
    return lambda n: bytes([byte]) * n


def frozen(ms: int) -> Callable[[], int]:
    return lambda: ms


def sequence(values: Iterator[int]) -> Callable[[], int]:
    return lambda: next(values)


def counter_of(u: uuid.UUID) -> int:
    return (u.int >> 64) & 0xFFF


def rand_b_of(u: uuid.UUID) -> int:
    return u.int & ((1 << 62) - 1)


def test_exports() -> None:
    assert set(ids.__all__) == {
        "UUIDv7Generator",
        "default_generator",
        "parse_message_id",
        "timestamp_ms",
    }
    for name in ids.__all__:
        assert hasattr(ids, name)


# --- layout (RFC 9562 §5.7) -----------------------------------------------------------


def test_version_and_variant_bits() -> None:
    gen = UUIDv7Generator(frozen(T0), seeded_rand())
    for _ in range(1000):
        u = gen.new()
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert (u.int >> 76) & 0xF == 0b0111
        assert (u.int >> 62) & 0b11 == 0b10


def test_bits_with_all_ones_randomness() -> None:
    # All-ones randomness must not leak into the version/variant bits, and the counter
    # seed has its top bit cleared (RFC 9562 §6.2 rollover guard).
    u = UUIDv7Generator(frozen(T0), const_rand(0xFF)).new()
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert counter_of(u) == 0x7FF
    assert rand_b_of(u) == (1 << 62) - 1
    assert timestamp_ms(u) == T0


def test_bits_with_all_zero_randomness() -> None:
    u = UUIDv7Generator(frozen(0), const_rand(0)).new()
    assert u == uuid.UUID("00000000-0000-7000-8000-000000000000")


def test_timestamp_is_the_clock() -> None:
    gen = UUIDv7Generator(sequence(iter([T0, T0 + 5, T0 + 1000])), seeded_rand())
    assert [timestamp_ms(gen.new()) for _ in range(3)] == [T0, T0 + 5, T0 + 1000]


def test_max_timestamp() -> None:
    u = UUIDv7Generator(frozen((1 << 48) - 1), seeded_rand()).new()
    assert timestamp_ms(u) == (1 << 48) - 1
    assert str(u).startswith("ffffffff-ffff-7")


# --- counter (RFC 9562 §6.2 method 1) -------------------------------------------------


def test_counter_increments_within_a_millisecond() -> None:
    gen = UUIDv7Generator(frozen(T0), const_rand(0x00))
    assert [counter_of(gen.new()) for _ in range(4)] == [0, 1, 2, 3]


def test_counter_reseeds_on_new_millisecond() -> None:
    seeds = iter([b"\x01\x23", b"\x00" * 8, b"\x00" * 8, b"\x04\x56", b"\x00" * 8])
    gen = UUIDv7Generator(sequence(iter([T0, T0, T0 + 1])), lambda _n: next(seeds))
    assert [counter_of(gen.new()) for _ in range(3)] == [0x123, 0x124, 0x456]


def test_counter_overflow_advances_timestamp() -> None:
    gen = UUIDv7Generator(frozen(T0), const_rand(0xFF))  # seed 0x7FF
    first = gen.new()
    assert counter_of(first) == 0x7FF
    batch = [gen.new() for _ in range(0xFFF - 0x7FF)]
    assert counter_of(batch[-1]) == 0xFFF
    assert {timestamp_ms(u) for u in batch} == {T0}
    rolled = gen.new()
    assert timestamp_ms(rolled) == T0 + 1
    assert counter_of(rolled) == 0x7FF
    assert rolled > batch[-1]


def test_clock_catching_up_after_overflow_keeps_counting() -> None:
    clock = [T0]
    gen = UUIDv7Generator(lambda: clock[0], const_rand(0xFF))
    for _ in range(0x802):  # overflow once: now at T0 + 1
        last = gen.new()
    assert timestamp_ms(last) == T0 + 1
    clock[0] = T0 + 1  # clock reaches the advanced timestamp: count on, do not reseed
    nxt = gen.new()
    assert timestamp_ms(nxt) == T0 + 1
    assert counter_of(nxt) == counter_of(last) + 1
    clock[0] = T0 + 2  # clock passes it: follow the clock again
    assert timestamp_ms(gen.new()) == T0 + 2


# --- monotonicity -----------------------------------------------------------------------


def assert_strictly_increasing(values: list[uuid.UUID]) -> None:
    ints = [u.int for u in values]
    assert all(a < b for a, b in itertools.pairwise(ints))
    strs = [str(u) for u in values]
    assert all(a < b for a, b in itertools.pairwise(strs))
    assert len(set(ints)) == len(ints)


def test_monotonic_with_frozen_clock() -> None:
    gen = UUIDv7Generator(frozen(T0), seeded_rand(7))
    values = [gen.new() for _ in range(100_000)]
    assert_strictly_increasing(values)
    # 100k ids in "one" millisecond overflow the counter: the timestamp drifts ahead,
    # by at most one ms per 2,048 ids.
    assert T0 < timestamp_ms(values[-1]) <= T0 + 100_000 // 2048 + 1


def test_monotonic_with_clock_going_backwards() -> None:
    gen = UUIDv7Generator(sequence(iter(range(T0, T0 - 100_000, -1))), seeded_rand(8))
    values = [gen.new() for _ in range(100_000)]
    assert_strictly_increasing(values)
    assert timestamp_ms(values[0]) == T0


def test_monotonic_with_jittery_clock() -> None:
    rng = random.Random(3)
    gen = UUIDv7Generator(lambda: T0 + rng.randint(-50, 50), seeded_rand(9))
    assert_strictly_increasing([gen.new() for _ in range(20_000)])


def test_sortable_as_strings() -> None:
    gen = UUIDv7Generator(sequence(iter(range(T0, T0 + 3000, 3))), seeded_rand(2))
    made = [gen.new_str() for _ in range(1000)]
    shuffled = made[:]
    random.Random(4).shuffle(shuffled)
    assert sorted(shuffled) == made


def test_thread_safe() -> None:
    gen = UUIDv7Generator(frozen(T0), seeded_rand(5))
    results: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def work(out: list[uuid.UUID]) -> None:
        out.extend(gen.new() for _ in range(5000))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [u for out in results for u in out]
    assert len(set(everything)) == 20_000
    for out in results:
        assert_strictly_increasing(out)


# --- new_str ----------------------------------------------------------------------------


def test_new_str_is_canonical() -> None:
    gen = UUIDv7Generator(frozen(T0), seeded_rand())
    for _ in range(100):
        text = gen.new_str()
        assert len(text) == 36
        assert CANONICAL.fullmatch(text)
        assert parse_message_id(text) == text


# --- bad injections ---------------------------------------------------------------------


@pytest.mark.parametrize("ms", [-1, 1 << 48, -(1 << 60)])
def test_clock_out_of_range(ms: int) -> None:
    with pytest.raises(ValueError, match="outside the UUIDv7 range"):
        UUIDv7Generator(frozen(ms), seeded_rand()).new()


def test_randbytes_wrong_length() -> None:
    with pytest.raises(ValueError, match="returned 1 bytes"):
        UUIDv7Generator(frozen(T0), lambda _n: b"\x00").new()


def test_timestamp_space_exhausted() -> None:
    gen = UUIDv7Generator(frozen((1 << 48) - 1), const_rand(0xFF))
    for _ in range(0x801):
        gen.new()
    with pytest.raises(ValueError, match="exhausted"):
        gen.new()


# --- default_generator ------------------------------------------------------------------


def test_default_generator_uses_the_wall_clock() -> None:
    gen = default_generator()
    before = time.time_ns() // 1_000_000
    a, b = gen.new(), gen.new()
    after = time.time_ns() // 1_000_000
    assert a < b
    assert before <= timestamp_ms(a) <= after + 1
    assert a.version == 7


def test_default_generators_are_independent_and_random() -> None:
    a, b = default_generator().new(), default_generator().new()
    assert a != b
    assert rand_b_of(a) != rand_b_of(b)


# --- parse_message_id -------------------------------------------------------------------


def test_parse_lowercases() -> None:
    assert parse_message_id(RFC_EXAMPLE) == RFC_EXAMPLE.lower()
    assert parse_message_id(RFC_EXAMPLE.lower()) == RFC_EXAMPLE.lower()


@pytest.mark.parametrize("variant_char", ["8", "9", "a", "b", "A", "B"])
def test_parse_accepts_rfc_variant(variant_char: str) -> None:
    text = f"017f22e2-79b0-7cc3-{variant_char}8c4-dc0c0c07398f"
    assert parse_message_id(text) == text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        str(uuid.UUID("9f1c3f0e-2b4a-4c7d-9e1f-0a1b2c3d4e5f")),  # version 4
        "017f22e2-79b0-1cc3-98c4-dc0c0c07398f",  # version 1
        "017f22e2-79b0-8cc3-98c4-dc0c0c07398f",  # version 8
        "00000000-0000-0000-0000-000000000000",  # nil
        "ffffffff-ffff-ffff-ffff-ffffffffffff",  # max
        "017f22e2-79b0-7cc3-08c4-dc0c0c07398f",  # NCS variant
        "017f22e2-79b0-7cc3-c8c4-dc0c0c07398f",  # Microsoft variant
        "017f22e2-79b0-7cc3-f8c4-dc0c0c07398f",  # reserved variant
        "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}",  # braces
        "urn:uuid:017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "017f22e279b07cc398c4dc0c0c07398f",  # no hyphens
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f0",  # too long
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398",  # too short
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f\n",  # trailing newline
        " 017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398g",  # not hex
        "017f22e279b0-7cc3-98c4-dc0c-0c07398f",  # hyphens misplaced, right length
        "017f22e2+79b0+7cc3+98c4+dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398\uff46",  # fullwidth 'f'
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398\u0661",  # Arabic-Indic digit one
        "x" * 10_000,
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_message_id(text)
    assert info.value.slug == "invalid-id"
    assert info.value.status == 400
    # The input is never echoed back.
    assert info.value.detail == "a message id must be a UUIDv7 in canonical form"


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(BadRequest):
        parse_message_id(uuid.UUID(RFC_EXAMPLE))  # type: ignore[arg-type]


# --- timestamp_ms -----------------------------------------------------------------------


def test_timestamp_ms_rfc_example() -> None:
    # RFC 9562 Appendix A.6: 0x017F22E279B0 is Tuesday 2022-02-22 14:22:22.00 -05:00.
    assert RFC_EXAMPLE_MS == 1_645_557_742_000
    assert timestamp_ms(RFC_EXAMPLE) == RFC_EXAMPLE_MS
    assert timestamp_ms(RFC_EXAMPLE.lower()) == RFC_EXAMPLE_MS
    assert timestamp_ms(uuid.UUID(RFC_EXAMPLE)) == RFC_EXAMPLE_MS


@pytest.mark.parametrize(
    "value",
    [
        uuid.UUID("9f1c3f0e-2b4a-4c7d-9e1f-0a1b2c3d4e5f"),
        uuid.UUID("017f22e2-79b0-7cc3-c8c4-dc0c0c07398f"),  # v7 bits, wrong variant
        "9f1c3f0e-2b4a-4c7d-9e1f-0a1b2c3d4e5f",
        "not an id",
    ],
)
def test_timestamp_ms_refuses_non_v7(value: uuid.UUID | str) -> None:
    with pytest.raises(BadRequest) as info:
        timestamp_ms(value)
    assert info.value.slug == "invalid-id"
