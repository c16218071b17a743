// A unit test's setup written against `InMemoryLock` of @paradoxical-io/common-server. The
// only change is this import (it was '@paradoxical-io/common-server/test/inMemoryLock').
import type { LockApi } from '@baton/client/locking';
import { InMemoryLock } from '@baton/client/test/in-memory-lock';

export class ManualTime {
  constructor(public now: number) {}
  epochMS(): number {
    return this.now;
  }
}

/** Whether a second worker is kept out until the first one's lease ends. */
export async function leaseExpiresOnTheInjectedClock(): Promise<{ whileHeld: boolean; afterExpiry: boolean }> {
  const time = new ManualTime(1_700_000_000_000);
  const lockApi: LockApi = new InMemoryLock(time);
  await lockApi.tryAcquire('report:daily', 60);
  const whileHeld = (await lockApi.tryAcquire('report:daily', 60)) !== undefined;
  time.now += 60_000;
  const afterExpiry = (await lockApi.tryAcquire('report:daily', 60)) !== undefined;
  return { whileHeld, afterExpiry };
}
