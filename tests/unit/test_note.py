"""herald.audit.note: C2SP signed notes and tlog checkpoints.

Known answers come from golang.org/x/mod/sumdb/note (its documentation example and
note_test.go: the PeterNeumann and EnochRoot keys) and from the C2SP specifications.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.audit import note as note_module
from herald.audit.merkle import root_hash
from herald.audit.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    MAX_TREE_SIZE,
    Checkpoint,
    NoteInvalid,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
    sign_note,
)
from herald.errors import HeraldError

EM = "\u2014"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
PETER_SIG = f"{EM} PeterNeumann {PETER_B64}\n"
GO_NOTE = GO_TEXT + "\n" + PETER_SIG
# note_test.go: EnochRoot's key is the one GenerateKey derives from an all-zero seed.
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)
# c2sp.org/signed-note, "Verifier keys" example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
)

ORIGIN = "herald.test/audit"
ROOT = root_hash([hashlib.sha256(b"leaf").digest()])


def make_signer(name: str = ORIGIN, seed: int = 1) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def sig_line(name: str, raw: bytes) -> str:
    return f"{EM} {name} {base64.b64encode(raw).decode()}\n"


@pytest.fixture
def peter() -> NoteVerifier:
    return NoteVerifier.from_key(GO_VKEY)


# --- known answers ---------------------------------------------------------------------------


def test_go_signer_key_id_and_verifier_key() -> None:
    signer = NoteSigner.from_key(GO_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.verifier_key() == GO_VKEY
    assert signer.verifier().verifier_key() == GO_VKEY


def test_go_signature_reproduced_byte_for_byte() -> None:
    assert NoteSigner.from_key(GO_SKEY).sign(GO_TEXT) == GO_NOTE


def test_go_note_verifies(peter: NoteVerifier) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id == 0xC74F20A3
    assert peter.verifier_key() == GO_VKEY
    assert peter.verify(GO_NOTE) == GO_TEXT
    assert peter.verify(GO_NOTE.encode()) == GO_TEXT


def test_go_two_signer_note(peter: NoteVerifier) -> None:
    enoch = NoteVerifier.from_key(ENOCH_VKEY)
    zero = NoteSigner("EnochRoot", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    assert zero.verifier_key() == ENOCH_VKEY
    both = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert sign_note(GO_TEXT, [NoteSigner.from_key(GO_SKEY), zero]) == both
    assert peter.verify(both) == GO_TEXT
    assert enoch.verify(both) == GO_TEXT
    # Each verifier ignores the other's line, whichever comes first.
    assert peter.verify(GO_TEXT + "\n" + ENOCH_SIG + PETER_SIG) == GO_TEXT


def test_spec_example_note() -> None:
    assert NoteVerifier.from_key(SPEC_VKEY).verify(SPEC_NOTE) == "This is an example message.\n"


def test_spec_example_checkpoint_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.parse(text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root.hex().startswith("0ac5186a")
    assert checkpoint.to_text() == text


def test_spec_example_with_empty_line_in_text_is_well_formed() -> None:
    # c2sp.org/signed-note opening example: the text contains an empty line; the signature
    # is by a key we do not have, so it is parsed, ignored, and the note refused.
    note = (
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\n"
        "ed \u00e8 subito sera.\n\n"
        f"{EM} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9o"
        "JKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
    )
    verifier = make_signer("quasimodo.example/salvatore").verifier()
    with pytest.raises(NoteInvalid, match="no signature by the trusted key"):
        verifier.verify(note)


# --- key strings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # other name
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # truncated
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX",  # non-canonical
        "PeterNeumann+c74f20a3+AhpjZQ==",  # other algorithm, short
        "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # algorithm 0x02
    ],
)
def test_verifier_key_refused(vkey: str) -> None:
    with pytest.raises(NoteInvalid):
        NoteVerifier.from_key(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        GO_VKEY,  # a verifier key is not a signer key
        "PRIVATE+KEY+PeterNeumann",
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeuman+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD=",
        "private+key+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_signer_key_refused(skey: str) -> None:
    with pytest.raises(NoteInvalid):
        NoteSigner.from_key(skey)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u3000b", "a\tb", "a\x7f\x01"])
def test_invalid_key_names_refused(name: str) -> None:
    with pytest.raises(NoteInvalid):
        make_signer(name)


def test_signer_repr_does_not_show_the_key() -> None:
    assert "PRIVATE" not in repr(NoteSigner.from_key(GO_SKEY))


# --- signing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "no newline", "a\r\n", "tab\there\n", "nul\x00\n", "\ud800\n"]
)
def test_sign_refuses_invalid_text(text: str) -> None:
    with pytest.raises(NoteInvalid):
        make_signer().sign(text)


def test_sign_refuses_oversized_note() -> None:
    with pytest.raises(NoteInvalid, match="too large"):
        make_signer().sign("x" * MAX_NOTE_SIZE + "\n")


def test_sign_note_refuses_bad_signer_lists() -> None:
    with pytest.raises(NoteInvalid):
        sign_note("a\n", [])
    with pytest.raises(NoteInvalid, match="twice"):
        sign_note("a\n", [make_signer(), make_signer()])
    with pytest.raises(NoteInvalid):
        sign_note("a\n", [make_signer(f"k{i}") for i in range(MAX_SIGNATURES + 1)])


@pytest.mark.parametrize(
    "text", ["\n", "a\n\nb\n", "a\n\n", "\n\n\n", "unicode \u2028 \u00e9 \U0001f600 \x7f\n"]
)
def test_texts_with_empty_lines_round_trip(text: str) -> None:
    signer = make_signer()
    assert signer.verifier().verify(signer.sign(text)) == text


def test_multiple_signatures_each_verify() -> None:
    signers = [make_signer(f"witness{i}.test", seed=i + 1) for i in range(3)]
    note = sign_note("body\n", signers)
    assert note.count(f"\n{EM} ") == 3
    for signer in signers:
        assert signer.verifier().verify(note) == "body\n"
    assert make_signer("other", seed=9).verifier().key_id not in {s.key_id for s in signers}
    with pytest.raises(NoteInvalid):
        make_signer("other", seed=9).verifier().verify(note)


# --- verification refusals -------------------------------------------------------------------


def test_tampered_text(peter: NoteVerifier) -> None:
    with pytest.raises(NoteInvalid, match="does not verify"):
        peter.verify(GO_NOTE.replace("answer", "Answer"))


def test_tampered_signature(peter: NoteVerifier) -> None:
    raw = bytearray(base64.b64decode(PETER_B64))
    raw[10] ^= 1
    with pytest.raises(NoteInvalid, match="does not verify"):
        peter.verify(GO_TEXT + "\n" + sig_line("PeterNeumann", bytes(raw)))


def test_wrong_length_signature_of_our_key(peter: NoteVerifier) -> None:
    raw = base64.b64decode(PETER_B64)
    for bad in (raw[:-1], raw + b"\x00", raw[:5]):
        with pytest.raises(NoteInvalid, match="does not verify"):
            peter.verify(GO_TEXT + "\n" + sig_line("PeterNeumann", bad))


def test_tampered_key_id_makes_the_signature_unknown(peter: NoteVerifier) -> None:
    raw = bytearray(base64.b64decode(PETER_B64))
    raw[3] ^= 1
    with pytest.raises(NoteInvalid, match="no signature by the trusted key"):
        peter.verify(GO_TEXT + "\n" + sig_line("PeterNeumann", bytes(raw)))


def test_tampered_name_makes_the_signature_unknown(peter: NoteVerifier) -> None:
    with pytest.raises(NoteInvalid, match="no signature by the trusted key"):
        peter.verify(GO_NOTE.replace("PeterNeumann", "PeterNewman"))


def test_bad_line_of_our_key_refuses_the_note_even_next_to_a_good_one(
    peter: NoteVerifier,
) -> None:
    raw = bytearray(base64.b64decode(PETER_B64))
    raw[-1] ^= 1
    bad = sig_line("PeterNeumann", bytes(raw))
    for note in (GO_NOTE + bad, GO_TEXT + "\n" + bad + PETER_SIG):
        with pytest.raises(NoteInvalid, match="does not verify"):
            peter.verify(note)


def test_duplicate_good_signature_is_accepted(peter: NoteVerifier) -> None:
    assert peter.verify(GO_NOTE + PETER_SIG) == GO_TEXT


def test_unknown_signers_are_ignored(peter: NoteVerifier) -> None:
    raw = base64.b64decode(PETER_B64)
    same_name_other_id = sig_line("PeterNeumann", b"\x00\x00\x00\x01" + raw[4:])
    same_id_other_name = sig_line("PaulNeumann", raw)
    other = make_signer("witness.test").signature_line(GO_TEXT)
    garbage_sig = sig_line("someone.else", b"\x01\x02\x03\x04\x05")
    note = GO_TEXT + "\n" + same_name_other_id + same_id_other_name + other + garbage_sig
    with pytest.raises(NoteInvalid, match="no signature by the trusted key"):
        peter.verify(note)
    assert peter.verify(note + PETER_SIG) == GO_TEXT
    assert peter.verify(GO_TEXT + "\n" + other + PETER_SIG + garbage_sig) == GO_TEXT


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (GO_TEXT + "\n" + PETER_SIG.replace(EM, "\u2013"), "em dash"),  # en dash
        (GO_TEXT + "\n" + PETER_SIG.replace(EM, "-"), "em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace(EM + " ", EM), "em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace(" x08go", "  x08go"), "base64"),
        (GO_TEXT + "\n" + PETER_SIG.replace(" x08go", "x08go"), "too short"),
        (GO_TEXT + PETER_SIG, "blank line"),  # missing blank line
        (GO_NOTE[:-1], "newline"),  # missing final newline
        (GO_NOTE + "garbage", "newline"),
        (GO_NOTE + "garbage\n", "em dash"),
        (GO_NOTE + "\n", "no signature lines"),
        (GO_NOTE.replace("\n", "\r\n"), "control"),  # CRLF
        (GO_NOTE.replace("problem,", "problem,\t"), "control"),
        (GO_NOTE + "\x00", "control"),
        (GO_TEXT + "\n", "no signature lines"),
        ("", "blank line"),
        ("\n\n", "no signature lines"),
        ("\n\n\n", "no signature lines"),
        (GO_TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "canonical"),  # unused bits set
        (GO_TEXT + "\n" + PETER_SIG.replace("AM=", "AM"), "base64"),  # no padding
        (GO_TEXT + "\n" + PETER_SIG.replace("x08go", "x08g*"), "base64"),
        (GO_TEXT + "\n" + f"{EM} PeterNeumann AQID\n", "too short"),
        (GO_TEXT + "\n" + f"{EM} PeterNeumann \n", "too short"),
        (GO_TEXT + "\n" + f"{EM}  x08go\n", "key name"),
        ("\ud800\n\n" + PETER_SIG, "UTF-8"),
    ],
)
def test_malformed_notes(peter: NoteVerifier, note: str, reason: str) -> None:
    with pytest.raises(NoteInvalid, match=reason):
        peter.verify(note)


@pytest.mark.parametrize(
    "data",
    [
        GO_NOTE.encode("utf-16"),
        GO_NOTE.encode().replace(b"problem", b"probl\xffm"),
        GO_NOTE.encode().replace(EM.encode(), b"\xe2\x80"),  # truncated em dash
        GO_NOTE.encode().replace(b"answer", b"\xed\xa0\x80"),  # UTF-8 encoded surrogate
        GO_NOTE.encode().replace(b"answer", b"\xc0\xa0"),  # overlong space
    ],
)
def test_invalid_utf8_refused(peter: NoteVerifier, data: bytes) -> None:
    with pytest.raises(NoteInvalid):
        peter.verify(data)


def test_too_many_signatures(peter: NoteVerifier) -> None:
    other = make_signer("witness.test").signature_line(GO_TEXT)
    assert peter.verify(GO_NOTE + other * (MAX_SIGNATURES - 1)) == GO_TEXT
    with pytest.raises(NoteInvalid, match="too many"):
        peter.verify(GO_NOTE + other * MAX_SIGNATURES)


def test_size_limit(peter: NoteVerifier) -> None:
    signer = make_signer()
    text = "x" * (MAX_NOTE_SIZE - 200) + "\n"
    note = signer.sign(text)
    assert signer.verifier().verify(note) == text
    with pytest.raises(NoteInvalid, match="too large"):
        peter.verify("x" * (MAX_NOTE_SIZE + 1))
    # Under the cap in characters, over it in UTF-8 bytes.
    with pytest.raises(NoteInvalid, match="too large"):
        peter.verify("\u00e9" * (MAX_NOTE_SIZE // 2 + 1))
    with pytest.raises(NoteInvalid, match="too large"):
        peter.verify(b"x" * (MAX_NOTE_SIZE + 1))


def test_note_invalid_is_a_herald_error() -> None:
    assert issubclass(NoteInvalid, HeraldError)


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_text_layout() -> None:
    checkpoint = Checkpoint(ORIGIN, 1, ROOT)
    assert checkpoint.to_text() == f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n"
    with_ext = Checkpoint(ORIGIN, 1, ROOT, ("ext one", "ext two"))
    assert with_ext.to_text().endswith("\next one\next two\n")


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest()),
        Checkpoint(ORIGIN, 1, ROOT),
        Checkpoint("origin with spaces+plus", MAX_TREE_SIZE, ROOT),
        Checkpoint(ORIGIN, 12345, ROOT, ("timestamp 1700000000", "\u2014 not a signature")),
    ],
)
def test_checkpoint_round_trip(checkpoint: Checkpoint) -> None:
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint
    signer = make_signer()
    note = sign_checkpoint(signer, checkpoint)
    assert open_checkpoint(signer.verifier(), note) == checkpoint
    assert open_checkpoint(signer.verifier(), note.encode(), origin=checkpoint.origin) == (
        checkpoint
    )


def test_checkpoint_extensions_list_becomes_tuple() -> None:
    checkpoint = Checkpoint(ORIGIN, 1, ROOT, ["a"])  # type: ignore[arg-type]
    assert checkpoint.extensions == ("a",)
    assert hash(checkpoint) == hash(Checkpoint(ORIGIN, 1, ROOT, ("a",)))


def test_open_checkpoint_checks_origin_and_signature() -> None:
    signer = make_signer()
    note = sign_checkpoint(signer, Checkpoint(ORIGIN, 3, ROOT))
    with pytest.raises(NoteInvalid, match="origin"):
        open_checkpoint(signer.verifier(), note, origin="herald.test/other")
    with pytest.raises(NoteInvalid):
        open_checkpoint(make_signer(seed=2).verifier(), note)
    with pytest.raises(NoteInvalid):
        open_checkpoint(signer.verifier(), note.replace("\n3\n", "\n4\n"))


def test_open_checkpoint_refuses_a_signed_non_checkpoint() -> None:
    signer = make_signer()
    with pytest.raises(NoteInvalid, match="three"):
        open_checkpoint(signer.verifier(), signer.sign("hello\n"))


ROOT64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFF]) * 32).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n01\n{ROOT64}\n",  # leading zero
        f"{ORIGIN}\n00\n{ROOT64}\n",
        f"{ORIGIN}\n-1\n{ROOT64}\n",  # negative
        f"{ORIGIN}\n+1\n{ROOT64}\n",
        f"{ORIGIN}\n 1\n{ROOT64}\n",
        f"{ORIGIN}\n1 \n{ROOT64}\n",
        f"{ORIGIN}\n1_0\n{ROOT64}\n",
        f"{ORIGIN}\n\u0661\n{ROOT64}\n",  # Arabic-Indic digit one
        f"{ORIGIN}\n0x10\n{ROOT64}\n",
        f"{ORIGIN}\n{MAX_TREE_SIZE + 1}\n{ROOT64}\n",
        f"{ORIGIN}\n{'9' * 5000}\n{ROOT64}\n",
        f"{ORIGIN}\n1\nnot base64!\n",  # non-base64 root
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33-byte root
        f"{ORIGIN}\n1\n{URLSAFE_ROOT}\n",  # URL-safe alphabet
        f"{ORIGIN}\n1\n{ROOT64.rstrip('=')}\n",  # unpadded
        f"{ORIGIN}\n1\n{ROOT64[:-2]}{chr(ord(ROOT64[-2]) + 1)}=\n",  # non-canonical bits
        f"{ORIGIN}\n1\n{ROOT64}",  # missing final newline
        f"\n1\n{ROOT64}\n",  # empty origin
        f"{ORIGIN}\n1\n{ROOT64}\n\n",  # empty extension line
        f"{ORIGIN}\n1\n{ROOT64}\n\nx\n",
        f"{ORIGIN}\n1\n",  # two lines
        "",
        "\n",
        f"{ORIGIN}\r\n1\r\n{ROOT64}\r\n",
        f"{ORIGIN}\x00\n1\n{ROOT64}\n",
        f"\ud800\n1\n{ROOT64}\n",
        "x" * (MAX_NOTE_SIZE + 1) + "\n",
    ],
)
def test_checkpoint_parse_refusals(text: str) -> None:
    with pytest.raises(NoteInvalid):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 1, "root": ROOT},
        {"origin": "a\nb", "size": 1, "root": ROOT},
        {"origin": ORIGIN, "size": -1, "root": ROOT},
        {"origin": ORIGIN, "size": MAX_TREE_SIZE + 1, "root": ROOT},
        {"origin": ORIGIN, "size": True, "root": ROOT},
        {"origin": ORIGIN, "size": 1.0, "root": ROOT},
        {"origin": ORIGIN, "size": 1, "root": ROOT[:31]},
        {"origin": ORIGIN, "size": 1, "root": ROOT.hex()},
        {"origin": ORIGIN, "size": 1, "root": ROOT, "extensions": ("",)},
        {"origin": ORIGIN, "size": 1, "root": ROOT, "extensions": ("a\nb",)},
        {"origin": ORIGIN, "size": 1, "root": ROOT, "extensions": ("tab\t",)},
    ],
)
def test_checkpoint_construction_refusals(kwargs: dict[str, object]) -> None:
    with pytest.raises(NoteInvalid):
        Checkpoint(**kwargs)  # type: ignore[arg-type]


def test_public_names() -> None:
    assert sorted(note_module.__all__) == sorted(
        [
            "ALG_ED25519",
            "MAX_NOTE_SIZE",
            "MAX_SIGNATURES",
            "MAX_TREE_SIZE",
            "Checkpoint",
            "NoteInvalid",
            "NoteSigner",
            "NoteVerifier",
            "open_checkpoint",
            "sign_checkpoint",
            "sign_note",
        ]
    )
    for name in note_module.__all__:
        assert hasattr(note_module, name)
