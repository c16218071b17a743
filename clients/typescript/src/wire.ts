/**
 * The HTTP API's bodies, mirrored from the Rust crate's `src/wire/` (the one wire
 * contract). Times are RFC 3339 strings in cluster time; durations are milliseconds.
 */

/** The answer to acquire and renew, and the `holder` of a `LOCK_HELD` problem. */
export interface Lease {
  key: string;
  owner: string;
  /** The fencing token: the log index of the entry that granted the lock. */
  token: number;
  acquired_at: string;
  /** In cluster time; count the lease on your own clock from the send instead. */
  expires_at: string;
  ttl_ms: number;
}

/** A queued waiter, as `GET /v1/locks/{key}?waiters=true` lists it. */
export interface WaiterInfo {
  owner: string;
  ttl_ms: number;
  queued_at: string;
  wait_until: string;
}

/** A lock as `get` and `list` show it. */
export interface LockInfo {
  key: string;
  owner: string;
  token: number;
  acquired_at: string;
  renewed_at: string;
  expires_at: string;
  ttl_ms: number;
  /** Clients waiting in the key's queue. */
  waiters: number;
  waiter_list?: WaiterInfo[];
}

/** One page of `GET /v1/locks`. */
export interface LockPage {
  locks: LockInfo[];
  next_cursor?: string | null;
}

/** The answer to release (and force release). */
export interface Released {
  key: string;
  released: boolean;
  /** Why nothing was released: `not_held` or `token_mismatch`. */
  reason?: 'not_held' | 'token_mismatch';
  timestamp: string;
}

/** The answer to validate. */
export interface Validation {
  valid: boolean;
  current_token?: number | null;
}

/** What happened to a key; also the SSE `event:` name. */
export type EventKind =
  | 'acquired'
  | 'renewed'
  | 'released'
  | 'expired'
  | 'force_released'
  | 'queued'
  | 'wait_timeout'
  | 'wait_cancelled';

/** The `data` of a lock event on `GET /v1/locks/{key}/events`. */
export interface LockEvent {
  index: number;
  key: string;
  event: EventKind;
  owner: string;
  token?: number | null;
  at: string;
  expires_at?: string | null;
  /** With auth on: the application of the grant or waiter. */
  app?: string;
  /** With auth on, on `force_released`: the application that forced the release. */
  by?: string;
}

/** An RFC 9457 problem body with Baton's stable `code`. */
export interface Problem {
  code: string;
  status: number;
  title?: string;
  detail: string;
  type?: string;
  /** With `LOCK_HELD`: the grant that holds the key. */
  holder?: Lease;
  /** With `LOCK_HELD` during a lock-delay: when the key becomes available. */
  available_at?: string;
  /** With `INVALID_API_KEY`: `false` (the Release Lock API's shape). */
  success?: boolean;
  /** With `INVALID_API_KEY`: `"Invalid API key"`. */
  error?: string;
}

/** Codes a client may retry (on any node): the cluster could not decide now. */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'NO_LEADER',
  'OUTCOME_UNKNOWN',
  'TOO_MANY_CONNECTIONS',
]);

/** Longest key, in bytes. */
export const MAX_KEY_BYTES = 255;
/** Longest owner, in bytes. */
export const MAX_OWNER_BYTES = 255;

const KEY_PATTERN = /^[A-Za-z0-9._:-]+$/;
const OWNER_PATTERN = /^[\x20-\x7e]+$/;

/** Why `key` cannot be sent, or `undefined` when it is a valid key. */
export function keyProblem(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) return 'key is empty';
  if (key.length > MAX_KEY_BYTES) return `key is ${key.length} bytes, at most ${MAX_KEY_BYTES} allowed`;
  if (!KEY_PATTERN.test(key)) return `key ${JSON.stringify(key)} has a byte outside [A-Za-z0-9._:-]`;
  return undefined;
}

/** Why `owner` cannot be sent, or `undefined` when it is a valid owner. */
export function ownerProblem(owner: string): string | undefined {
  if (typeof owner !== 'string' || owner.length === 0) return 'owner is empty';
  if (owner.length > MAX_OWNER_BYTES) return `owner is ${owner.length} bytes, at most ${MAX_OWNER_BYTES} allowed`;
  if (!OWNER_PATTERN.test(owner)) return `owner ${JSON.stringify(owner)} has a byte outside printable ASCII`;
  return undefined;
}
