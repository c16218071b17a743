/**
 * `BatonClient`: talks to any node over Node's built-in `fetch`, follows leader changes,
 * retries what is safe. The rules are the Rust client's (`src/client/mod.rs`):
 *
 * - A call goes first to the node that last gave a final answer; on failure it rotates to
 *   the next endpoint.
 * - Every write is idempotent (acquire by the same owner returns the same grant, renew
 *   and release by token can be repeated), so `NO_LEADER`, `OUTCOME_UNKNOWN`,
 *   `TOO_MANY_CONNECTIONS` and transport failures are retried after a capped exponential
 *   backoff with jitter until `callTimeoutMs` (plus an acquire's `waitMs`) runs out; then
 *   the call rejects with `NoAnswerError` naming what each node said.
 * - Any other answer is final: a result, or a typed error (`LockHeldError`,
 *   `LockLostError`, `WaitTimeoutError`, `BatonError { code, status }`).
 *
 * A grant carries the moment its request was *sent* on the client's monotonic clock; the
 * safe deadline (`safeDeadline`) counts from it.
 */
import { BatonError, LockHeldError, LockLostError, NoAnswerError, WaitTimeoutError } from './errors.js';
import { lock, withLock, type LockHandle, type LockOptions, type WithLockFn } from './keeper.js';
import type { AcquireOptions, CallOptions, EventsOptions, Granted, LockService, RenewOptions } from './service.js';
import { parseSseBlock, type SseEvent } from './sse.js';
import { backoffPause, DEFAULT_BACKOFF, systemClock, type Backoff, type Clock } from './timing.js';
import {
  keyProblem,
  ownerProblem,
  RETRYABLE_CODES,
  type Lease,
  type LockInfo,
  type LockPage,
  type Problem,
  type Released,
  type Validation,
} from './wire.js';

/** Longest a call keeps retrying, ms. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
/** Longest wait for one HTTP answer, ms (a node answers `OUTCOME_UNKNOWN` after 5 s). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** Pause before an event stream reconnects to the next node, ms. */
const RECONNECT_PAUSE_MS = 500;

export interface BatonClientOptions {
  /** `host:port` (or `http://host:port`) of the nodes, as a list or comma-separated. */
  endpoints: string[] | string;
  /** Sent as `Authorization: Bearer <apiKey>` when the cluster checks API keys. */
  apiKey?: string;
  /** How long one call keeps retrying, ms (an acquire's `waitMs` comes on top). Default 30000. */
  callTimeoutMs?: number;
  /** Longest wait for one HTTP answer, ms. Default 10000. */
  requestTimeoutMs?: number;
  /** Backoff between attempts (default 50 ms doubling to 2 s). */
  backoff?: Partial<Backoff>;
  /** The clock grants are timed on (tests inject one). */
  clock?: Clock;
  /** The `fetch` to use (default: Node's global one). */
  fetch?: typeof fetch;
  /** Random numbers in [0, 1) for the jitter (tests make it deterministic). */
  random?: () => number;
}

/** One HTTP attempt's outcome, before the retry rules. */
type Attempt =
  | { kind: 'final'; status: number; body: string }
  | { kind: 'busy'; problem: Problem }
  | { kind: 'none'; error: string };

/** Turns `host:port` or `http(s)://host:port[/]` into a base URL; throws `BatonError` `CONFIG`. */
export function parseEndpoint(endpoint: string): string {
  const e = endpoint.trim();
  const withScheme = /^[a-z]+:\/\//i.test(e) ? e : `http://${e}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new BatonError('CONFIG', 0, `endpoint ${JSON.stringify(endpoint)} is not host:port`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new BatonError('CONFIG', 0, `endpoint ${JSON.stringify(endpoint)}: only http:// and https:// are supported`);
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || !url.host) {
    throw new BatonError('CONFIG', 0, `endpoint ${JSON.stringify(endpoint)} must be host:port without a path`);
  }
  return `${url.protocol}//${url.host}`;
}

/** A Baton client. Share one per process: `fetch` keeps its connections open between calls. */
export class BatonClient implements LockService {
  readonly endpoints: readonly string[];
  readonly clock: Clock;
  readonly callTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly backoff: Backoff;
  readonly #apiKey: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #random: () => number;
  /** Index of the endpoint to try first: the last one that gave a final answer. */
  #preferred = 0;

  constructor(options: BatonClientOptions) {
    const list =
      typeof options.endpoints === 'string'
        ? options.endpoints.split(',').filter((e) => e.trim() !== '')
        : options.endpoints;
    if (!Array.isArray(list) || list.length === 0) throw new BatonError('CONFIG', 0, 'no endpoints given');
    this.endpoints = list.map(parseEndpoint);
    this.#apiKey = options.apiKey;
    this.callTimeoutMs = positive(options.callTimeoutMs, DEFAULT_CALL_TIMEOUT_MS, 'callTimeoutMs');
    this.requestTimeoutMs = positive(options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
    this.backoff = {
      initialMs: positive(options.backoff?.initialMs, DEFAULT_BACKOFF.initialMs, 'backoff.initialMs'),
      maxMs: positive(options.backoff?.maxMs, DEFAULT_BACKOFF.maxMs, 'backoff.maxMs'),
    };
    this.clock = options.clock ?? systemClock;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#random = options.random ?? Math.random;
  }

  /** The endpoint the next call goes to first. */
  get preferredEndpoint(): string {
    return this.endpoints[this.#preferred % this.endpoints.length]!;
  }

  /**
   * Takes `key` for `owner`: at once if free (or already `owner`'s), else waiting up to
   * `waitMs` in the key's FIFO queue. A grant from the queue is renewed at once, so that
   * its safe deadline counts from a recent send.
   */
  async acquire(key: string, options: AcquireOptions): Promise<Granted> {
    checkKey(key);
    const bad = ownerProblem(options.owner);
    if (bad) throw new BatonError('INVALID_REQUEST', 400, bad);
    const waitMs = Math.max(0, options.waitMs ?? 0);
    const body: Record<string, unknown> = { owner: options.owner };
    if (options.ttlMs !== undefined) body.ttl_ms = Math.round(options.ttlMs);
    if (waitMs > 0) body.wait_ms = Math.round(waitMs);
    if (options.lockDelayMs !== undefined) body.lock_delay_ms = Math.round(options.lockDelayMs);
    const granted = await this.#grant(key, 'acquire', body, waitMs, options.signal);
    if (waitMs === 0) return granted;
    return this.renew(key, granted.lease.token, options.signal ? { signal: options.signal } : {});
  }

  /** Extends the lease held under `token` (the grant's TTL unless `ttlMs`). */
  async renew(key: string, token: number, options: RenewOptions = {}): Promise<Granted> {
    checkKey(key);
    const body: Record<string, unknown> = { token };
    if (options.ttlMs !== undefined) body.ttl_ms = Math.round(options.ttlMs);
    return this.#grant(key, 'renew', body, 0, options.signal);
  }

  /** Releases the lock held under `token`; `released: false` (with `reason`) when it was not held. */
  async release(key: string, token: number, options: CallOptions = {}): Promise<Released> {
    checkKey(key);
    return this.#call<Released>('POST', `/v1/locks/${key}/release`, { token }, 0, options.signal);
  }

  /** Force release (`DELETE /v1/locks/{key}`), whoever holds it: an operator's action. */
  async forceRelease(key: string, options: CallOptions = {}): Promise<Released> {
    checkKey(key);
    return this.#call<Released>('DELETE', `/v1/locks/${key}`, undefined, 0, options.signal);
  }

  /** The live lock on `key` (linearizable), or `undefined`. */
  async get(key: string, options: CallOptions & { waiters?: boolean } = {}): Promise<LockInfo | undefined> {
    checkKey(key);
    const query = options.waiters ? '?waiters=true' : '';
    try {
      return await this.#call<LockInfo>('GET', `/v1/locks/${key}${query}`, undefined, 0, options.signal);
    } catch (e) {
      if (e instanceof BatonError && e.code === 'LOCK_NOT_FOUND') return undefined;
      throw e;
    }
  }

  /** One page of live locks whose keys start with `prefix`. */
  async list(
    prefix = '',
    options: CallOptions & { cursor?: string; limit?: number } = {},
  ): Promise<LockPage> {
    const q = new URLSearchParams({ prefix });
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    if (options.cursor !== undefined) q.set('cursor', options.cursor);
    return this.#call<LockPage>('GET', `/v1/locks?${q}`, undefined, 0, options.signal);
  }

  /** Whether `token` is the live holder of `key` now. */
  async validate(key: string, token: number, options: CallOptions = {}): Promise<Validation> {
    checkKey(key);
    return this.#call<Validation>('POST', `/v1/locks/${key}/validate`, { token }, 0, options.signal);
  }

  /** Takes `key` and keeps it (see `LockHandle`); rejects like `acquire`. */
  lock(key: string, options: LockOptions = {}): Promise<LockHandle> {
    return lock(this, key, options);
  }

  /**
   * Runs `fn(token, signal)` while holding `key`, renewing it meanwhile, and releases it
   * afterwards. Rejects with `LockLostError` as soon as the lock is lost (`signal` aborts
   * at the same moment: stop acting on the resource).
   */
  withLock<T>(key: string, options: LockOptions, fn: WithLockFn<T>): Promise<T> {
    return withLock(this, key, options, fn);
  }

  /**
   * The key's events as an async iterator over the SSE stream: from after log index
   * `after` (live only when absent), reconnecting to the next node with the last event id
   * when a stream drops, until `signal` aborts or the loop breaks.
   */
  async *events(key: string, options: EventsOptions = {}): AsyncGenerator<SseEvent, void, undefined> {
    checkKey(key);
    let lastId = options.after;
    let index = this.#preferred;
    const outer = options.signal;
    while (!outer?.aborted) {
      const endpoint = this.endpoints[index % this.endpoints.length]!;
      const stream = new AbortController();
      const stop = () => stream.abort();
      outer?.addEventListener('abort', stop, { once: true });
      try {
        const headers: Record<string, string> = { accept: 'text/event-stream', ...this.#auth() };
        if (lastId !== undefined) headers['last-event-id'] = String(lastId);
        const res = await this.#fetch(`${endpoint}/v1/locks/${key}/events`, { headers, signal: stream.signal });
        if (res.ok && res.body) {
          const decoder = new TextDecoder();
          let buf = '';
          for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
            buf += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, '\n');
            let end: number;
            while ((end = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, end);
              buf = buf.slice(end + 2);
              const ev = parseSseBlock(block);
              if (!ev) continue;
              if (ev.id !== undefined) lastId = ev.id;
              yield ev;
            }
          }
        } else {
          await res.body?.cancel().catch(() => undefined);
        }
      } catch {
        // A dropped or refused stream: resume on the next node with the last id.
      } finally {
        outer?.removeEventListener('abort', stop);
        stream.abort();
      }
      index += 1;
      await this.clock.sleep(RECONNECT_PAUSE_MS, outer);
    }
  }

  async #grant(
    key: string,
    action: 'acquire' | 'renew',
    body: unknown,
    waitMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Granted> {
    // The send time of the attempt that succeeded is later; the first one's is only more
    // conservative.
    const sentAt = this.clock.now();
    try {
      const lease = await this.#call<Lease>('POST', `/v1/locks/${key}/${action}`, body, waitMs, signal);
      return { lease, sentAt };
    } catch (e) {
      // A refusal during a lock-delay or behind the queue names no holder: name the key.
      if (e instanceof LockHeldError && e.key === '') throw new LockHeldError(key, e.message, e.holder, e.availableAt);
      throw e;
    }
  }

  #auth(): Record<string, string> {
    return this.#apiKey ? { authorization: `Bearer ${this.#apiKey}` } : {};
  }

  /**
   * Sends the request, retrying on the retryable codes and transport failures until the
   * call timeout (plus `waitMs`) runs out; decodes a 2xx answer or throws the typed error
   * of a final refusal.
   */
  async #call<T>(
    method: string,
    path: string,
    body: unknown,
    waitMs: number,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const started = this.clock.now();
    const deadline = started + this.callTimeoutMs + waitMs;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const trouble = new Map<string, string>();
    let index = this.#preferred;
    for (let attempt = 0; ; attempt += 1) {
      signal?.throwIfAborted();
      const slot = index % this.endpoints.length;
      const endpoint = this.endpoints[slot]!;
      // Never wait for one answer past the call's deadline.
      const limit = Math.max(1, Math.min(this.requestTimeoutMs + waitMs, deadline - this.clock.now()));
      const outcome = await this.#attempt(endpoint, method, path, payload, limit, signal);
      signal?.throwIfAborted();
      if (outcome.kind === 'final') {
        this.#preferred = slot;
        return answer<T>(endpoint, outcome.status, outcome.body);
      }
      trouble.set(
        endpoint,
        outcome.kind === 'busy' ? `${outcome.problem.code}: ${outcome.problem.detail}` : outcome.error,
      );
      const pause = backoffPause(this.backoff, attempt, this.#random());
      const now = this.clock.now();
      if (now + pause >= deadline) {
        const said = [...trouble].map(([e, what]) => `${e}: ${what}`).join('; ');
        throw new NoAnswerError(
          `no node could serve ${method} ${path} within ${Math.round((now - started) / 100) / 10}s (${attempt + 1} attempts): ${said}`,
          attempt + 1,
        );
      }
      await this.clock.sleep(pause, signal);
      index += 1;
    }
  }

  async #attempt(
    endpoint: string,
    method: string,
    path: string,
    payload: string | undefined,
    limitMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Attempt> {
    const timeout = AbortSignal.timeout(limitMs);
    const headers: Record<string, string> = { ...this.#auth() };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const init: RequestInit = {
      method,
      headers,
      signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
    };
    if (payload !== undefined) init.body = payload;
    let res: Response;
    try {
      res = await this.#fetch(`${endpoint}${path}`, init);
    } catch (e) {
      return { kind: 'none', error: transportError(e, timeout, limitMs) };
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      return { kind: 'none', error: `the answer (HTTP ${res.status}) broke off: ${transportError(e, timeout, limitMs)}` };
    }
    if (res.status === 503) {
      const problem = readProblem(text, res.status);
      return { kind: 'busy', problem };
    }
    const problem = res.ok ? undefined : readProblem(text, res.status);
    if (problem && RETRYABLE_CODES.has(problem.code)) return { kind: 'busy', problem };
    return { kind: 'final', status: res.status, body: text };
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new BatonError('CONFIG', 0, `${name} ${value} must be a positive number`);
  return value;
}

/** Refuses a key before it goes into a URL, with the answer a node would give. */
function checkKey(key: string): void {
  const bad = keyProblem(key);
  if (bad) throw new BatonError('INVALID_KEY', 400, bad);
}

function transportError(e: unknown, timeout: AbortSignal, limitMs: number): string {
  if (timeout.aborted) return `no answer within ${limitMs} ms`;
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const cause = err?.cause;
  if (cause?.code === 'ECONNREFUSED') return 'cannot connect (connection refused)';
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
  return cause?.message ?? err?.message ?? String(e);
}

/** A problem body, or a stand-in that keeps what an error answer without one said. */
function readProblem(text: string, status: number): Problem {
  try {
    const p = JSON.parse(text) as Partial<Problem>;
    if (p && typeof p === 'object' && typeof p.code === 'string') {
      return { ...p, code: p.code, status: p.status ?? status, detail: p.detail ?? '' } as Problem;
    }
  } catch {
    // Not JSON: fall through.
  }
  return { code: 'UNKNOWN', status, detail: `HTTP ${status} without a problem body: ${text.trim().slice(0, 200)}` };
}

/** A final answer: the decoded body of a 2xx, or the typed error of a refusal. */
export function answer<T>(endpoint: string, status: number, body: string): T {
  if (status >= 200 && status < 300) {
    try {
      return JSON.parse(body) as T;
    } catch (e) {
      throw new BatonError('UNEXPECTED_ANSWER', status, `unexpected answer from ${endpoint}: ${(e as Error).message}: ${body.slice(0, 200)}`);
    }
  }
  throw refusal(readProblem(body, status));
}

/** The typed error of a final non-2xx answer. */
export function refusal(problem: Problem): BatonError {
  switch (problem.code) {
    case 'LOCK_HELD':
      return new LockHeldError(problem.holder?.key ?? '', problem.detail, problem.holder, problem.available_at);
    case 'LOCK_LOST':
      return new LockLostError(problem.detail);
    case 'WAIT_TIMEOUT':
      return new WaitTimeoutError(problem.detail);
    default:
      return new BatonError(problem.code, problem.status, problem.detail);
  }
}
