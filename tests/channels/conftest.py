"""Channel test fixtures: a throwaway CA that the egress policy trusts, loopback allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from tests.channels.peers import LOOPBACK

from herald.channels.egress import EgressPolicy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def policy(ca_file: Path) -> EgressPolicy:
    return EgressPolicy(allow=LOOPBACK, ca_file=ca_file, connect_timeout=2.0, read_timeout=2.0)
