// Code written against `LockApi` of @paradoxical-io/common-server. The only change for Baton
// is this import (it was '@paradoxical-io/common-server/locking'), plus `new BatonLockApi()`
// where the service built its Redis-backed `LockApi`.
import { BatonLockApi, type Lock, type LockApi, NoOpLock } from '@baton/client/locking';

export function makeLockApi(locksDisabled: boolean): LockApi {
  return locksDisabled ? new NoOpLock(false) : new BatonLockApi();
}

export async function processOrder(lockApi: LockApi, orderId: string, charge: () => Promise<void>): Promise<boolean> {
  const lock = await lockApi.tryAcquire(`order:${orderId}`, 30);
  if (!lock) {
    return false; // another instance is handling this order
  }
  try {
    await charge();
    return true;
  } finally {
    await lock.release();
  }
}

export async function acquireWithRetry(lockApi: LockApi, key: string, maxAttempts = 3): Promise<Lock | undefined> {
  for (let i = 0; i < maxAttempts; i++) {
    const lock = await lockApi.tryAcquire(key, 30);
    if (lock) return lock;
    await new Promise((resolve) => setTimeout(resolve, 100 * Math.pow(2, i)));
  }
  return undefined;
}
