/**
 * `@baton/client`: the Baton lock service from Node.js.
 *
 * - `BatonClient`: any node, leader tracking, retries with backoff, typed errors, events.
 * - `lock` / `LockHandle` and `withLock`: a held lock that renews itself, with its fencing
 *   token, its safe deadline and an `AbortSignal` that fires when it is lost.
 * - `MemoryLocks`: the same rules in process, for tests.
 * - Compatibility modules as subpaths: `@baton/client/locking`,
 *   `@baton/client/test/in-memory-lock`, `@baton/client/redis-service`,
 *   `@baton/client/release-lock`, `@baton/client/use-lock`.
 */
export { BatonClient, DEFAULT_CALL_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, parseEndpoint } from './client.js';
export type { BatonClientOptions } from './client.js';
export { BatonError, LockHeldError, LockLostError, NoAnswerError, WaitTimeoutError } from './errors.js';
export { DEFAULT_LOCK_TTL_MS, LockHandle, lock, withLock } from './keeper.js';
export type { LockOptions, WithLockFn } from './keeper.js';
export { MemoryLocks, MEMORY_DEFAULT_TTL_MS, wallClock } from './memory.js';
export { uniqueOwner } from './owner.js';
export { defaultService, setDefaultService } from './default-service.js';
export type { AcquireOptions, CallOptions, EventsOptions, Granted, LockService, RenewOptions } from './service.js';
export { lockEventOf, parseSseBlock } from './sse.js';
export type { SseEvent } from './sse.js';
export {
  backoffPause,
  DEFAULT_BACKOFF,
  MAX_SAFETY_MARGIN_MS,
  renewInterval,
  safeDeadline,
  safetyMarginMs,
  systemClock,
} from './timing.js';
export type { Backoff, Clock } from './timing.js';
export { keyProblem, ownerProblem, RETRYABLE_CODES } from './wire.js';
export type { EventKind, Lease, LockEvent, LockInfo, LockPage, Problem, Released, Validation, WaiterInfo } from './wire.js';
