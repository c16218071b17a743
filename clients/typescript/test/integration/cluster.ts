/**
 * A real three-node Baton cluster for the integration tests: the built `baton` binary
 * (`BATON_BIN`, else `$CARGO_TARGET_DIR/release/baton`, else `target/release/baton` of the
 * repository), free loopback ports, a temp dir, readiness polled with a deadline. Nodes are
 * stopped by PID; every node still running is killed when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How long a cluster may take to become ready, or to agree on a leader, ms. */
export const READY_TIMEOUT_MS = 30_000;
/** Poll period while waiting, ms. */
const POLL_MS = 50;

const packageRoot = fileURLToPath(new URL('../../../', import.meta.url));
const repoRoot = resolve(packageRoot, '../..');

/** The `baton` binary the tests run. */
export function batonBinary(): string {
  const bin =
    process.env.BATON_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target'), 'release', 'baton');
  if (!existsSync(bin)) {
    throw new Error(`no baton binary at ${bin}: run \`cargo build --release\` in ${repoRoot} first, or set BATON_BIN`);
  }
  return bin;
}

const everyChild = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of everyChild) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGCONT');
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
});

/** `n` distinct free loopback ports: every listener is held until all are chosen. */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = createServer();
      await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', () => ok()));
      servers.push(server);
    }
    return servers.map((s) => {
      const addr = s.address();
      if (addr === null || typeof addr === 'string') throw new Error('a bound TCP address');
      return addr.port;
    });
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

interface Node {
  id: number;
  api: string;
  raft: string;
  child?: ChildProcess;
}

export class TestCluster {
  readonly dir: string;
  readonly nodes: Node[];
  readonly #config: string;
  readonly #bin: string;

  private constructor(dir: string, nodes: Node[], config: string, bin: string) {
    this.dir = dir;
    this.nodes = nodes;
    this.#config = config;
    this.#bin = bin;
  }

  /** Starts three nodes and waits until every one is ready. */
  static async start(): Promise<TestCluster> {
    const bin = batonBinary();
    const dir = mkdtempSync(join(tmpdir(), 'baton-ts-'));
    const ports = await freePorts(6);
    const nodes: Node[] = [1, 2, 3].map((id) => ({
      id,
      api: `127.0.0.1:${ports[2 * (id - 1)]}`,
      raft: `127.0.0.1:${ports[2 * (id - 1) + 1]}`,
    }));
    let toml = '';
    for (const n of nodes) {
      toml += `[[nodes]]\nid = ${n.id}\napi = "${n.api}"\nraft = "${n.raft}"\ndata_dir = "${join(dir, `n${n.id}`)}"\n\n`;
    }
    // Short elections and sweeps, as the Rust integration tests use.
    toml +=
      '[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n' +
      'sweep_interval_ms = 100\nsecret = "test-secret"\n\n' +
      '[lease]\nmin_ttl_ms = 100\nmax_ttl_ms = 600000\ndefault_ttl_ms = 30000\n\n' +
      '[api]\nrequest_timeout_ms = 5000\nleader_wait_ms = 3000\n';
    const config = join(dir, 'cluster.toml');
    writeFileSync(config, toml);
    const cluster = new TestCluster(dir, nodes, config, bin);
    for (const n of nodes) cluster.spawn(n.id);
    await cluster.waitReady();
    return cluster;
  }

  /** `host:port` of every node's API, in id order. */
  get endpoints(): string[] {
    return this.nodes.map((n) => n.api);
  }

  node(id: number): Node {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  log(id: number): string {
    try {
      return readFileSync(join(this.dir, `n${id}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  /** Starts node `id` (it must not be running). */
  spawn(id: number): void {
    const n = this.node(id);
    const log = openSync(join(this.dir, `n${id}.log`), 'a');
    const child = spawn(this.#bin, ['server', '--config', this.#config, '--node', String(id)], {
      stdio: ['ignore', 'ignore', log],
      env: { ...process.env, RUST_LOG: 'baton=info,openraft=error' },
    });
    everyChild.add(child);
    child.once('exit', () => everyChild.delete(child));
    n.child = child;
  }

  /** Sends `signal` to node `id` by its PID. */
  signal(id: number, signal: NodeJS.Signals): void {
    const pid = this.node(id).child?.pid;
    if (pid === undefined) throw new Error(`node ${id} is not running`);
    process.kill(pid, signal);
  }

  /** `kill -9` node `id` and wait until it has exited. */
  async kill(id: number): Promise<void> {
    const n = this.node(id);
    const child = n.child;
    if (!child) return;
    n.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(child.pid!, 'SIGCONT');
    process.kill(child.pid!, 'SIGKILL');
    await exited;
  }

  /** Waits until every running node answers `/readyz` with 200. */
  async waitReady(timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const n of this.nodes.filter((x) => x.child)) {
      for (;;) {
        const ok = await fetch(`http://${n.api}/readyz`, { signal: AbortSignal.timeout(2_000) })
          .then((r) => r.status === 200)
          .catch(() => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`node ${n.id} not ready in ${timeoutMs} ms; log:\n${this.log(n.id)}`);
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    }
  }

  /** The leader that every running node agrees on. */
  async leader(timeoutMs = READY_TIMEOUT_MS): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = await Promise.all(
        this.nodes
          .filter((n) => n.child)
          .map((n) =>
            fetch(`http://${n.api}/v1/cluster`, { signal: AbortSignal.timeout(2_000) })
              .then((r) => r.json() as Promise<{ leader_id?: number | null }>)
              .then((v) => v.leader_id ?? undefined)
              .catch(() => undefined),
          ),
      );
      const first = seen[0];
      if (first !== undefined && seen.every((l) => l === first) && this.node(first).child) return first;
      if (Date.now() > deadline) throw new Error(`no agreed leader in ${timeoutMs} ms: ${JSON.stringify(seen)}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** Stops every node (SIGKILL by PID, after SIGCONT for a stopped one) and removes the temp dir. */
  async close(): Promise<void> {
    for (const n of this.nodes) await this.kill(n.id);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
