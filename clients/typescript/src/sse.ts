/** Server-Sent Events of `GET /v1/locks/{key}/events`: parsing, shared by the client and tests. */
import type { LockEvent } from './wire.js';

/** One Server-Sent Event. */
export interface SseEvent {
  /** The `event:` name (`acquired`, `released`, …, or `reset`). */
  event: string;
  /** The parsed `data:` JSON (`null` if it was not JSON). */
  data: unknown;
  /** The `id:` (a log index), set on the last event of each log entry. */
  id?: number;
}

/** Parses one SSE block (the text between blank lines); `undefined` for comments and keep-alives. */
export function parseSseBlock(block: string): SseEvent | undefined {
  let event = 'message';
  let data = '';
  let id: number | undefined;
  for (const raw of block.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trimStart();
    else if (line.startsWith('id:')) {
      const n = Number(line.slice(3).trim());
      if (Number.isSafeInteger(n) && n >= 0) id = n;
    }
  }
  if (data === '') return undefined;
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(data);
  } catch {
    parsed = null;
  }
  return id === undefined ? { event, data: parsed } : { event, data: parsed, id };
}

/** The data of a lock event (`acquired`, `released`, …); `undefined` for `reset` and anything else. */
export function lockEventOf(ev: SseEvent): LockEvent | undefined {
  const d = ev.data as Partial<LockEvent> | null;
  if (ev.event === 'reset' || d === null || typeof d !== 'object') return undefined;
  if (typeof d.index !== 'number' || typeof d.key !== 'string' || typeof d.event !== 'string') return undefined;
  return d as LockEvent;
}
