// RFC 9162 Merkle tree hashing and inclusion-proof verification, with WebCrypto SHA-256.
// Hashes are Uint8Array(32). Pure: no DOM, no network.

const enc = new TextEncoder();

/** SHA-256 of bytes -> Uint8Array. */
export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 || entry). `entry` is a string (UTF-8) or bytes. */
export function leafHash(entry) {
  const bytes = typeof entry === 'string' ? enc.encode(entry) : entry;
  return sha256(concat(Uint8Array.of(0), bytes));
}

/** RFC 9162 §2.1.1 interior node: SHA-256(0x01 || left || right). */
export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/** MTH of the empty tree: SHA-256 of the empty string. */
export function emptyRoot() {
  return sha256(new Uint8Array(0));
}

/**
 * Incremental Merkle tree hash: push leaf hashes one by one, then root().
 * A stack of (hash, size) merges equal-size neighbours, which reproduces RFC 9162's split at
 * the largest power of two k < n. O(n) hashes, O(log n) memory.
 */
export class TreeHasher {
  constructor() {
    this.stack = [];
    this.count = 0;
  }

  async push(leaf) {
    this.stack.push([leaf, 1]);
    this.count += 1;
    const st = this.stack;
    while (st.length >= 2 && st[st.length - 1][1] === st[st.length - 2][1]) {
      const [right, size] = st.pop();
      const [left] = st.pop();
      st.push([await nodeHash(left, right), size * 2]);
    }
  }

  async root() {
    if (this.stack.length === 0) return emptyRoot();
    // Fold the remaining (strictly decreasing) subtrees from the right.
    let digest = this.stack[this.stack.length - 1][0];
    for (let i = this.stack.length - 2; i >= 0; i -= 1) {
      digest = await nodeHash(this.stack[i][0], digest);
    }
    return digest;
  }
}

/** MTH over a list of leaf hashes (RFC 9162 §2.1.1). */
export async function rootHash(leaves) {
  const t = new TreeHasher();
  for (const leaf of leaves) await t.push(leaf);
  return t.root();
}

/** Constant-shape byte comparison. */
export function equalBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * RFC 9162 §2.1.3.2: does `proof` show that `leaf` is leaf `index` of the tree of `size`
 * leaves whose head is `root`? Returns true/false (false also for bad index or lengths).
 * index and size are numbers (safe integers); bit operations use BigInt-free arithmetic.
 */
export async function verifyInclusion(leaf, index, size, proof, root) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size)) return false;
  if (index < 0 || index >= size) return false;
  for (const x of [leaf, root, ...proof]) if (!x || x.length !== 32) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);
  for (const p of proof) {
    if (sn === 0) return false; // proof longer than the tree is deep
    if (odd(fn) || fn === sn) {
      r = await nodeHash(p, r);
      if (!odd(fn)) {
        // Skip levels where the node is a lone right-edge child.
        while (fn !== 0 && !odd(fn)) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equalBytes(r, root);
}

/** Hex <-> bytes and base64 <-> bytes helpers. */
export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
    throw new Error('not hex');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromBase64(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Error('not base64');
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}
