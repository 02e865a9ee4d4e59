"""The registry of fuzz targets: name -> module exposing ``test_one_input(data: bytes)``.

Modules are named, not imported, here: the runner imports a target inside
``atheris.instrument_imports()`` so that the Herald modules it pulls in are instrumented.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

__all__ = ["CORPUS_DIR", "TARGETS", "corpus_dir", "load"]

#: Target name -> module. Every target has a seed corpus under ``fuzzing/corpus/<name>/``.
TARGETS: dict[str, str] = {
    "signature_headers": "fuzzing.targets.signature_headers",
    "content_digest": "fuzzing.targets.content_digest",
    "bearer_tokens": "fuzzing.targets.bearer_tokens",
    "client_assertions": "fuzzing.targets.client_assertions",
    "app_keys": "fuzzing.targets.app_keys",
    "topic_patterns": "fuzzing.targets.topic_patterns",
    "aead_envelope": "fuzzing.targets.aead_envelope",
    "e2e_envelope": "fuzzing.targets.e2e_envelope",
    "signed_note": "fuzzing.targets.signed_note",
    "channel_endpoints": "fuzzing.targets.channel_endpoints",
    "channel_responses": "fuzzing.targets.channel_responses",
    "recipient_body": "fuzzing.targets.recipient_body",
    "stream_frames": "fuzzing.targets.stream_frames",
    "publish_body": "fuzzing.targets.publish_body",
    "audit_bundle": "fuzzing.targets.audit_bundle",
}

CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus"


def corpus_dir(name: str) -> Path:
    """The committed seed corpus of target ``name``."""
    return CORPUS_DIR / name


def load(name: str) -> Callable[[bytes], None]:
    """Import target ``name`` and return its ``test_one_input``."""
    module = importlib.import_module(TARGETS[name])
    entry: Callable[[bytes], None] = module.test_one_input
    return entry
