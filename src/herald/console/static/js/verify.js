// Audit verification flows shared by the dashboard, the audit page and the message page.
// Every network answer is checked locally: signatures with WebCrypto Ed25519, hashes with
// WebCrypto SHA-256. Nothing here touches the DOM; progress goes through callbacks.

import { api, query } from './api.js';
import { TreeHasher, equalBytes, fromHex, leafHash, toHex, verifyInclusion } from './merkle.js';
import { parseCheckpoint, parseVerifierKey, verifyNote } from './note.js';

const PAGE = 1000;

/** GET the latest checkpoint JSON (null when none is signed yet). */
export async function fetchCheckpoint() {
  try {
    return await api('/v1/audit/checkpoint');
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

/**
 * Verify the checkpoint note under the published audit key and check that the JSON fields
 * agree with the signed text. Returns {origin, size, root, rootB64, signer}.
 */
export async function verifyCheckpoint(cp) {
  const keyText = await api('/.well-known/herald-audit-key', { text: true });
  const key = await parseVerifierKey(keyText);
  const text = await verifyNote(cp.note, key);
  const signed = parseCheckpoint(text);
  if (signed.size !== cp.size || signed.rootB64 !== cp.root || signed.origin !== cp.origin) {
    throw new Error('checkpoint fields differ from the signed note');
  }
  return { ...signed, signer: key.name };
}

/** The first signer name written in a note (for display before verification). */
export function noteSigner(note) {
  const m = /\n\n\u2014 (\S+) /.exec(note || '');
  return m ? m[1] : '—';
}

/**
 * Full log verification against a checkpoint JSON `cp`.
 * onProgress({phase, done, total, text}). Returns {entries, mode: 'tree'|'inclusion'}.
 * Throws Error naming the first bad index.
 */
export async function verifyLog(cp, onProgress = () => {}) {
  onProgress({ done: 0, total: cp.size, text: 'Checking the checkpoint signature…' });
  const checkpoint = await verifyCheckpoint(cp);
  const size = checkpoint.size;
  const tree = new TreeHasher();
  const mine = []; // [index, leaf] of the entries this operator can see
  let contiguous = true;
  for (let from = 0; from < size; from += PAGE) {
    const to = Math.min(from + PAGE, size);
    const page = await api(`/v1/audit/entries${query({ from, to })}`);
    for (const item of page.entries || []) {
      if (item.index < from || item.index >= to) continue;
      const leaf = await leafHash(item.entry);
      if (toHex(leaf) !== String(item.leaf_hash).toLowerCase()) {
        throw new Error(`Entry ${item.index}: leaf hash does not match the entry text`);
      }
      if (contiguous && item.index === tree.count) await tree.push(leaf);
      else contiguous = false;
      mine.push([item.index, leaf]);
    }
    onProgress({ done: to, total: size, text: `Read ${to} of ${size} entries` });
  }
  if (contiguous && tree.count === size) {
    const root = await tree.root();
    if (!equalBytes(root, checkpoint.root)) {
      // Find the first entry whose inclusion proof fails, to name it.
      onProgress({ done: 0, total: size, text: 'Root differs: locating the first bad entry…' });
      const bad = await firstUnproven(mine, checkpoint, () => {});
      throw new Error(`Merkle tree hash of ${size} entries does not match the checkpoint root` +
        (bad === null ? '' : `; first bad entry: ${bad}`));
    }
    return { entries: size, mode: 'tree', checkpoint };
  }
  // A tenant operator sees only its own entries: prove each one's inclusion instead.
  const bad = await firstUnproven(mine, checkpoint, onProgress);
  if (bad !== null) {
    throw new Error(`Entry ${bad}: inclusion proof does not verify against the checkpoint`);
  }
  return { entries: mine.length, mode: 'inclusion', checkpoint };
}

/** Prove [index, leaf] pairs against the checkpoint; return the first failing index or null. */
async function firstUnproven(items, checkpoint, onProgress) {
  const size = checkpoint.size;
  // Up to 8 proofs in flight; results are checked in index order so the first bad one is named.
  const prove = async ([index, leaf]) => {
    const p = await api(`/v1/audit/proof/inclusion${query({ index, size })}`);
    return verifyInclusion(leaf, index, size, (p.proof || []).map(fromHex), checkpoint.root);
  };
  for (let i = 0; i < items.length; i += 8) {
    const batch = items.slice(i, i + 8);
    const results = await Promise.all(batch.map(prove));
    const bad = results.indexOf(false);
    if (bad >= 0) return batch[bad][0];
    const done = i + batch.length;
    onProgress({ done, total: items.length, text: `Proved ${done} of ${items.length} entries` });
  }
  return null;
}

/**
 * Verify one message's audit entry step by step. `audit` = {index, leaf_hash}.
 * onStep({label, ok (true/false, null = waiting), detail}).
 * Returns 'verified' | 'pending' (not yet in a checkpoint) | 'failed'.
 * Stops at the first failed step (throws nothing; the failed step is reported).
 */
export async function verifyMessageAudit(audit, onStep) {
  const step = (label, ok, detail = '') => {
    onStep({ label, ok, detail });
    return ok;
  };
  let cp;
  try {
    cp = await fetchCheckpoint();
  } catch (err) {
    step('Fetch the latest signed checkpoint', false, err.message);
    return 'failed';
  }
  if (!cp || audit.index >= cp.size) {
    step('Entry is in a signed checkpoint', null,
      'not yet in a signed checkpoint (checkpoints are signed every few seconds)');
    return 'pending';
  }
  let checkpoint;
  try {
    checkpoint = await verifyCheckpoint(cp);
    step('Checkpoint signature (Ed25519) and key hash', true,
      `signed by ${checkpoint.signer}, size ${checkpoint.size}`);
  } catch (err) {
    step('Checkpoint signature (Ed25519) and key hash', false, err.message);
    return 'failed';
  }
  let leaf;
  try {
    const page = await api(`/v1/audit/entries${query({ from: audit.index, to: audit.index + 1 })}`);
    const item = (page.entries || []).find((e) => e.index === audit.index);
    if (!item) throw new Error('entry not returned by the server');
    leaf = await leafHash(item.entry);
    const hex = toHex(leaf);
    if (hex !== String(audit.leaf_hash).toLowerCase() || hex !== String(item.leaf_hash).toLowerCase()) {
      throw new Error('recomputed leaf hash differs from the recorded one');
    }
    step('Leaf hash recomputed from the entry text', true, hex);
  } catch (err) {
    step('Leaf hash recomputed from the entry text', false, err.message);
    return 'failed';
  }
  try {
    const p = await api(`/v1/audit/proof/inclusion${query({ index: audit.index, size: checkpoint.size })}`);
    const proof = (p.proof || []).map(fromHex);
    const ok = await verifyInclusion(leaf, audit.index, checkpoint.size, proof, checkpoint.root);
    if (!ok) throw new Error('the proof does not lead to the checkpoint root');
    step('Inclusion proof (RFC 9162) leads to the checkpoint root', true,
      `${proof.length} hashes, tree size ${checkpoint.size}`);
  } catch (err) {
    step('Inclusion proof (RFC 9162) leads to the checkpoint root', false, err.message);
    return 'failed';
  }
  return 'verified';
}
