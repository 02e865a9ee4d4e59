"""One fuzz target under atheris: ``python -m fuzzing._child NAME [libFuzzer flags] [dirs]``.

Started by :mod:`fuzzing.run`, one process per target, because ``atheris.Fuzz()`` never
returns (libFuzzer exits the process when the time is up or an input fails). Herald's
modules are imported inside ``atheris.instrument_imports`` so coverage guides the fuzzer
through them; the libraries they use are not instrumented.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

from fuzzing.targets import TARGETS, load


def main() -> None:
    """Instrument, load the target named by ``argv[1]`` and fuzz it (never returns)."""
    name = sys.argv[1]
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}")
    with atheris.instrument_imports(include=["herald"]):
        entry = load(name)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], entry)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
