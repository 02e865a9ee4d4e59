// fetch wrapper for the console: JSON in/out, CSRF header on state-changing methods,
// problem+json errors turned into ApiError, 401 turned into a "session expired" event.

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** In-memory session state (the CSRF token never goes to storage). */
export const session = {
  csrf: null,
  operator: null,
  expiresAt: null,
};

/** An error carrying the RFC 9457 problem (if any) and the HTTP status. */
export class ApiError extends Error {
  constructor(message, status, problem) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem || null;
  }
}

/** Event fired on window when any call answers 401 (session expired or revoked). */
export const EXPIRED_EVENT = 'herald:session-expired';

async function problemOf(res) {
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      return await res.json();
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * Call the API. `opts.body` (object) is sent as JSON; `opts.text` reads the answer as text;
 * `opts.quiet401` suppresses the expired event (used by the initial session probe).
 */
export async function api(path, opts = {}) {
  const method = (opts.method || 'GET').toUpperCase();
  const headers = { Accept: 'application/json, application/problem+json, text/plain' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (UNSAFE.has(method) && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError('The server could not be reached. Check your connection.', 0, null);
  }
  if (res.status === 401 && !opts.quiet401) {
    session.csrf = null;
    session.operator = null;
    window.dispatchEvent(new CustomEvent(EXPIRED_EVENT));
  }
  if (!res.ok) {
    const problem = await problemOf(res);
    const text = (problem && (problem.detail || problem.title)) ||
      `Request failed (HTTP ${res.status}).`;
    throw new ApiError(text, res.status, problem);
  }
  if (res.status === 204) return null;
  if (opts.text) return res.text();
  const type = res.headers.get('Content-Type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** Encode a path segment (tenant ids, client ids, key ids). */
export const seg = (v) => encodeURIComponent(String(v));

/** Build a query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** The error text to show for any thrown value. */
export function errorText(err) {
  if (err instanceof ApiError) return err.message;
  if (err && err.message) return err.message;
  return String(err);
}
