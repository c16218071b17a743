// The README's TypeScript blocks are excerpts of the examples that npm test compiles and runs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const packageRoot = fileURLToPath(new URL('../../../', import.meta.url));
const repoRoot = resolve(packageRoot, '../..');
const MARKER = /^<!-- (clients\/typescript\/examples\/[a-z-]+\.ts) -->$/;

test('every TypeScript block of the README section is a verbatim excerpt of a tested example', () => {
  const all = readFileSync(resolve(repoRoot, 'README.md'), 'utf8').split('\n');
  const start = all.indexOf('## From TypeScript');
  assert.ok(start >= 0, 'README.md has a "## From TypeScript" section');
  const next = all.findIndex((l, i) => i > start && l.startsWith('## '));
  // Keep README line numbers: blank out everything outside the section.
  const lines = all.map((l, i) => (i >= start && (next < 0 || i < next) ? l : ''));
  const seen = new Set<string>();
  let tsBlocks = 0;
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```ts') continue;
    tsBlocks += 1;
    const marker = MARKER.exec(lines[i - 1] ?? '');
    assert.ok(marker, `README.md:${i + 1}: a ts block needs a <!-- clients/typescript/examples/….ts --> line above it`);
    const end = lines.indexOf('```', i + 1);
    const block = lines.slice(i + 1, end).join('\n');
    const source = readFileSync(resolve(repoRoot, marker[1]!), 'utf8');
    assert.ok(source.includes(block), `README.md:${i + 1}: the block is not an excerpt of ${marker[1]}`);
    seen.add(marker[1]!);
  }
  assert.ok(tsBlocks >= 6);
  for (const name of ['core', 'locking', 'in-memory-lock', 'redis-service', 'release-lock', 'use-lock']) {
    assert.ok(seen.has(`clients/typescript/examples/${name}.ts`), `no README example of ${name}`);
  }
});
