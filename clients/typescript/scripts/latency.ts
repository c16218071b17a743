/**
 * `npm run latency [-- ITERATIONS]`: acquire→release latency of this client on one
 * connection, next to the Rust client's, against a throwaway three-node cluster on free
 * loopback ports (the integration tests' `TestCluster`; needs the built `baton`).
 *
 * Both clients talk to the leader only, one cycle at a time: acquire (ttl 30 s) then
 * release by token. The Rust side is `scripts/rust-latency` (built with cargo into
 * `$CARGO_TARGET_DIR`, or given as `RUST_LATENCY_BIN`); without cargo only Node is measured.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BatonClient } from '@baton/client';

import { TestCluster } from '../test/integration/cluster.js';

/** Cycles run before measuring (connection set-up, JIT). */
const WARMUP = 50;
const DEFAULT_ITERATIONS = 1_000;

const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
const repoRoot = resolve(packageRoot, '../..');

function summary(samples: number[]) {
  const s = [...samples].sort((x, y) => x - y);
  const pct = (p: number) => s[Math.round((s.length - 1) * p)]!;
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { iterations: s.length, mean_ms: r(mean), p50_ms: r(pct(0.5)), p90_ms: r(pct(0.9)), p99_ms: r(pct(0.99)), max_ms: r(pct(1)) };
}

function rustBinary(): string | undefined {
  if (process.env.RUST_LATENCY_BIN) return process.env.RUST_LATENCY_BIN;
  const dir = join(packageRoot, 'scripts', 'rust-latency');
  copyFileSync(join(repoRoot, 'Cargo.lock'), join(dir, 'Cargo.lock'));
  const built = spawnSync('cargo', ['build', '--release', '--quiet'], { cwd: dir, stdio: 'inherit' });
  if (built.status !== 0) return undefined;
  const bin = join(process.env.CARGO_TARGET_DIR ?? join(dir, 'target'), 'release', 'rust-latency');
  return existsSync(bin) ? bin : undefined;
}

async function main(): Promise<void> {
  const iterations = Number(process.argv[2] ?? DEFAULT_ITERATIONS);
  const rust = rustBinary();
  const cluster = await TestCluster.start();
  try {
    const leader = cluster.node(await cluster.leader()).api;
    const client = new BatonClient({ endpoints: [leader] });
    const samples: number[] = [];
    for (let i = 0; i < WARMUP + iterations; i++) {
      const started = performance.now();
      const { lease } = await client.acquire('latency-node', { owner: 'node-latency', ttlMs: 30_000 });
      await client.release('latency-node', lease.token);
      if (i >= WARMUP) samples.push(performance.now() - started);
    }
    console.log(JSON.stringify({ client: 'node', node: process.version, ...summary(samples) }));
    if (rust) {
      process.stdout.write(execFileSync(rust, [leader, String(iterations)], { encoding: 'utf8' }));
    } else {
      console.log('{"client":"rust","skipped":"cargo build of scripts/rust-latency failed"}');
    }
  } finally {
    await cluster.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
