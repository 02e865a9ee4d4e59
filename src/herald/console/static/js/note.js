// C2SP signed notes and tlog checkpoints, verified with WebCrypto Ed25519.
// Pure: no DOM, no network. Every failure throws an Error whose message names the reason.

import { equalBytes, fromBase64, sha256, toBase64 } from './merkle.js';

const enc = new TextEncoder();
const SIG_PREFIX = '\u2014 '; // em dash + space
const ALG_ED25519 = 0x01;

/** Key hash: first 4 bytes of SHA-256(utf8(name) || "\n" || 0x01 || pubkey). */
export async function keyHash(name, publicKey) {
  const nameBytes = enc.encode(name);
  const buf = new Uint8Array(nameBytes.length + 2 + publicKey.length);
  buf.set(nameBytes, 0);
  buf[nameBytes.length] = 0x0a;
  buf[nameBytes.length + 1] = ALG_ED25519;
  buf.set(publicKey, nameBytes.length + 2);
  return (await sha256(buf)).slice(0, 4);
}

/**
 * Parse a verifier key "<name>+<8 hex key hash>+<base64(0x01 || 32-byte key)>" and check
 * that the key hash matches. Returns {name, keyId (Uint8Array 4), publicKey (Uint8Array 32)}.
 */
export async function parseVerifierKey(text) {
  const line = String(text).trim();
  const first = line.indexOf('+');
  const second = first < 0 ? -1 : line.indexOf('+', first + 1);
  if (first <= 0 || second < 0) throw new Error('malformed verifier key');
  const name = line.slice(0, first);
  const hex8 = line.slice(first + 1, second);
  const key64 = line.slice(second + 1);
  if (/\s/.test(name)) throw new Error('invalid key name');
  if (!/^[0-9a-f]{8}$/.test(hex8)) throw new Error('key hash is not 8 lower-case hex digits');
  let raw;
  try {
    raw = fromBase64(key64);
  } catch {
    throw new Error('verifier key is not base64');
  }
  if (raw.length !== 33 || raw[0] !== ALG_ED25519) throw new Error('not an Ed25519 note key');
  const publicKey = raw.slice(1);
  const keyId = await keyHash(name, publicKey);
  const claimed = Uint8Array.from(hex8.match(/../g), (x) => parseInt(x, 16));
  if (!equalBytes(keyId, claimed)) throw new Error('key hash does not match the key');
  return { name, keyId, publicKey };
}

/**
 * Split a signed note into its text (up to and including the newline before the last blank
 * line) and signature lines [{name, keyId, signature}].
 */
export function parseNote(note) {
  if (typeof note !== 'string') throw new Error('note is not text');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('no blank line before the signatures');
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block || !block.endsWith('\n')) throw new Error('malformed signature block');
  const signatures = [];
  for (const line of block.slice(0, -1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) throw new Error('malformed signature line');
    const rest = line.slice(SIG_PREFIX.length);
    const space = rest.lastIndexOf(' ');
    if (space <= 0) throw new Error('malformed signature line');
    let raw;
    try {
      raw = fromBase64(rest.slice(space + 1));
    } catch {
      throw new Error('signature is not base64');
    }
    if (raw.length < 5) throw new Error('signature too short');
    signatures.push({ name: rest.slice(0, space), keyId: raw.slice(0, 4), signature: raw.slice(4) });
  }
  return { text, signatures };
}

/**
 * Verify a signed note with a parsed verifier key. Every signature line by this key must
 * verify and at least one must exist. Returns the signed text.
 */
export async function verifyNote(note, key) {
  const { text, signatures } = parseNote(note);
  const cryptoKey = await crypto.subtle.importKey('raw', key.publicKey, { name: 'Ed25519' },
    false, ['verify']);
  const body = enc.encode(text);
  let found = false;
  for (const sig of signatures) {
    if (sig.name !== key.name || !equalBytes(sig.keyId, key.keyId)) continue;
    if (sig.signature.length !== 64) throw new Error('Ed25519 signature has the wrong length');
    const ok = await crypto.subtle.verify('Ed25519', cryptoKey, sig.signature, body);
    if (!ok) throw new Error('signature does not verify');
    found = true;
  }
  if (!found) throw new Error('no signature by the trusted key');
  return text;
}

/** Parse checkpoint text "origin\nsize\nroot_b64\n[extension lines]" -> {origin, size, root}. */
export function parseCheckpoint(text) {
  const lines = text.split('\n');
  if (lines.length < 4 || lines[lines.length - 1] !== '') throw new Error('malformed checkpoint');
  const [origin, sizeText, root64] = lines;
  if (!origin) throw new Error('checkpoint has no origin');
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText)) throw new Error('checkpoint size is not a number');
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size)) throw new Error('checkpoint size too large');
  let root;
  try {
    root = fromBase64(root64);
  } catch {
    throw new Error('checkpoint root is not base64');
  }
  if (root.length !== 32) throw new Error('checkpoint root is not 32 bytes');
  return { origin, size, root, rootB64: toBase64(root) };
}
