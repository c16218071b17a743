/**
 * Owner names. Baton's acquire is idempotent per owner (a retried acquire returns the same
 * grant), so two callers in one process that share an owner would both "win" the same
 * key. Every acquisition made by this package therefore uses an owner of its own.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** Longest host part kept in an owner, so that any prefix still fits the 255-byte limit. */
const MAX_HOST_CHARS = 64;

/** `host-pid-random` (printable ASCII), unique per call: one per acquisition. */
export function uniqueOwner(prefix?: string): string {
  const host = hostname().replace(/[^\x21-\x7e]|@/g, '_').slice(0, MAX_HOST_CHARS) || 'host';
  const id = `${host}-${process.pid}-${randomBytes(6).toString('hex')}`;
  return prefix ? `${prefix}-${id}` : id;
}
