"""Coverage-guided parser fuzzers (atheris/libFuzzer) for every parser of untrusted input.

Each module under :mod:`fuzzing.targets` exposes ``test_one_input(data: bytes) -> None``,
which feeds the bytes to one parser and lets through only that parser's typed refusal:
anything else propagates and is a finding. The targets run without atheris too (the test
suite replays their seed corpora and random bytes through them); ``python -m fuzzing.run``
runs them under atheris. Nothing here imports :mod:`herald` at package import time, so the
runner can instrument Herald's modules when a target imports them.
"""
