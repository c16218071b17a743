/**
 * Typed errors. Every refusal a node gives becomes a `BatonError` carrying the API's
 * stable `code` and HTTP `status`; the three a lock holder acts on have classes of their
 * own (`instanceof` works across the ESM and CommonJS builds only within one of them).
 */
import type { Lease } from './wire.js';

/** A refusal by the cluster (or by the client, before sending, with the code a node would give). */
export class BatonError extends Error {
  /** The problem code: `LOCK_HELD`, `INVALID_KEY`, `NO_LEADER`, …; client-side: `NO_ANSWER`, `CONFIG`, `UNEXPECTED_ANSWER`. */
  readonly code: string;
  /** The HTTP status (0 when no node answered). */
  readonly status: number;
  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BatonError';
    this.code = code;
    this.status = status;
  }
}

/** Another owner holds the key (or the queue or a lock-delay keeps it: then `holder` is absent). */
export class LockHeldError extends BatonError {
  readonly key: string;
  /** The grant that holds the key. */
  readonly holder: Lease | undefined;
  /** During a lock-delay: when the key becomes available (RFC 3339). */
  readonly availableAt: string | undefined;
  constructor(key: string, detail: string, holder?: Lease, availableAt?: string) {
    super('LOCK_HELD', 409, detail);
    this.name = 'LockHeldError';
    this.key = key;
    this.holder = holder;
    this.availableAt = availableAt;
  }
}

/** The token no longer holds the lock: a renewal was refused, or the lease keeper saw it end. */
export class LockLostError extends BatonError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super('LOCK_LOST', 409, detail, options);
    this.name = 'LockLostError';
  }
}

/** An acquire's wait in the key's queue ran out. */
export class WaitTimeoutError extends BatonError {
  constructor(detail: string) {
    super('WAIT_TIMEOUT', 409, detail);
    this.name = 'WaitTimeoutError';
  }
}

/** No node gave a final answer before the call timeout; `message` says what the nodes did. */
export class NoAnswerError extends BatonError {
  /** Attempts made. */
  readonly attempts: number;
  constructor(message: string, attempts: number, options?: { cause?: unknown }) {
    super('NO_ANSWER', 0, message, options);
    this.name = 'NoAnswerError';
    this.attempts = attempts;
  }
}
