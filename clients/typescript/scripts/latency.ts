/**
 * `npm run latency [-- ITERATIONS]`: acquire→release latency of this client on one
 * connection, next to the Rust client's, against a throwaway three-node cluster on free
 * loopback ports (the integration tests' `TestCluster`; needs the built `baton`).
 *
 * Both clients talk to the leader only, one cycle at a time: acquire (ttl 30 s) then
 * release by token. They take turns for `ROUNDS` rounds (a first run right after the
 * cluster starts is slower, and a busy machine drifts), and each prints its figures over
 * all rounds, with each round's median. The Rust side is `scripts/rust-latency` (built with cargo into
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
/** Turns each client takes. */
const ROUNDS = 3;

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
    const node: number[] = [];
    const nodeRounds: number[] = [];
    const rustRounds: Array<Record<string, number>> = [];
    for (let round = 0; round < ROUNDS; round++) {
      const samples: number[] = [];
      for (let i = 0; i < WARMUP + iterations; i++) {
        const started = performance.now();
        const { lease } = await client.acquire('latency-node', { owner: 'node-latency', ttlMs: 30_000 });
        await client.release('latency-node', lease.token);
        if (i >= WARMUP) samples.push(performance.now() - started);
      }
      node.push(...samples);
      nodeRounds.push(summary(samples).p50_ms);
      if (rust) rustRounds.push(JSON.parse(execFileSync(rust, [leader, String(iterations)], { encoding: 'utf8' })));
    }
    console.log(JSON.stringify({ client: 'node', node: process.version, ...summary(node), round_p50_ms: nodeRounds }));
    if (rust) {
      const mean = (k: string) => Math.round((rustRounds.reduce((a, r) => a + r[k]!, 0) / rustRounds.length) * 1000) / 1000;
      console.log(
        JSON.stringify({
          client: 'rust',
          iterations: rustRounds.reduce((a, r) => a + r.iterations!, 0),
          mean_ms: mean('mean_ms'),
          p50_ms_mean_of_rounds: mean('p50_ms'),
          p99_ms_mean_of_rounds: mean('p99_ms'),
          round_p50_ms: rustRounds.map((r) => r.p50_ms),
        }),
      );
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
