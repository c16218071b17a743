/**
 * The process-wide service behind the compatibility modules' free functions
 * (`/redis-service`, `/release-lock`, `/use-lock`): what `setDefaultService` set, else a
 * `BatonClient` for `BATON_ENDPOINTS` (comma-separated `host:port`; `BATON_API_KEY` if the
 * cluster checks keys), read when first needed. The ESM and CommonJS builds each keep
 * their own (Node loads them as separate modules).
 */
import { BatonClient } from './client.js';
import { BatonError } from './errors.js';
import type { LockService } from './service.js';

let configured: LockService | undefined;
let fromEnv: { endpoints: string; apiKey: string | undefined; client: BatonClient } | undefined;

/** Makes `service` the one the compatibility modules use (`undefined`: back to `BATON_ENDPOINTS`). */
export function setDefaultService(service: LockService | undefined): void {
  configured = service;
}

/**
 * The configured service, else the client for `BATON_ENDPOINTS`, else `fallback()` (only
 * `useLock()` has one); without any, a `BatonError` with code `CONFIG` naming `purpose`.
 */
export function defaultService(purpose: string, fallback?: () => LockService): LockService {
  if (configured) return configured;
  const endpoints = process.env.BATON_ENDPOINTS?.trim();
  if (endpoints) {
    const apiKey = process.env.BATON_API_KEY || undefined;
    if (!fromEnv || fromEnv.endpoints !== endpoints || fromEnv.apiKey !== apiKey) {
      fromEnv = { endpoints, apiKey, client: new BatonClient({ endpoints, ...(apiKey ? { apiKey } : {}) }) };
    }
    return fromEnv.client;
  }
  if (fallback) return fallback();
  throw new BatonError(
    'CONFIG',
    0,
    `${purpose} needs BATON_ENDPOINTS (host:port,host:port,…) or setDefaultService() from @baton/client`,
  );
}
