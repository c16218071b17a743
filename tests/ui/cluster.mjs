// A real three-node Baton cluster with access control on, for the status page's browser
// test: the built `baton` binary (`BATON_BIN`, else `$CARGO_TARGET_DIR/release/baton`,
// else the repository's `target/release/baton`), free loopback ports, a temp dir,
// readiness polled with a deadline. Nodes are stopped by PID, also when the test
// process exits early.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How long the cluster may take to be ready and agree on a leader, ms. */
export const READY_TIMEOUT_MS = 30_000;
const POLL_MS = 50;
const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');

export function batonBinary() {
  const bin =
    process.env.BATON_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target'), 'release', 'baton');
  if (!existsSync(bin)) {
    throw new Error(`no baton binary at ${bin}: run \`cargo build --release\` first, or set BATON_BIN`);
  }
  return bin;
}

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      await new Promise((ok, fail) => s.once('error', fail).listen(0, '127.0.0.1', ok));
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Cluster {
  /** Starts three nodes with `[auth] enabled` and the applications `apps`
   * (`{ name: [key, 'PERMISSION=PREFIX', ...] }`), and waits until they are ready. */
  static async start(apps) {
    const c = new Cluster();
    c.dir = mkdtempSync(join(tmpdir(), 'baton-ui-'));
    const ports = await freePorts(6);
    c.nodes = [1, 2, 3].map((id) => ({
      id,
      api: `127.0.0.1:${ports[2 * (id - 1)]}`,
      raft: `127.0.0.1:${ports[2 * (id - 1) + 1]}`,
    }));
    let keys = '';
    for (const [name, [key, ...perms]] of Object.entries(apps)) {
      keys += `${name} sha256:${createHash('sha256').update(key).digest('hex')} ${perms.join(' ')}\n`;
    }
    writeFileSync(join(c.dir, 'keys'), keys);
    let toml = '';
    for (const n of c.nodes) {
      toml += `[[nodes]]\nid = ${n.id}\napi = "${n.api}"\nraft = "${n.raft}"\ndata_dir = "${join(c.dir, `n${n.id}`)}"\n\n`;
    }
    toml +=
      '[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n' +
      'sweep_interval_ms = 100\nsecret = "test-secret"\n\n' +
      `[auth]\nenabled = true\nkeys_file = "${join(c.dir, 'keys')}"\n`;
    c.config = join(c.dir, 'cluster.toml');
    writeFileSync(c.config, toml);
    const bin = batonBinary();
    for (const n of c.nodes) {
      const log = openSync(join(c.dir, `n${n.id}.log`), 'a');
      n.child = spawn(bin, ['server', '--config', c.config, '--node', String(n.id)], {
        stdio: ['ignore', 'ignore', log],
        env: { ...process.env, RUST_LOG: 'baton=info,openraft=error' },
      });
      children.add(n.child);
    }
    await c.waitReady();
    return c;
  }

  log(id) {
    try {
      return readFileSync(join(this.dir, `n${id}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  api(id) {
    return this.nodes.find((n) => n.id === id).api;
  }

  async waitReady() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (const n of this.nodes) {
      for (;;) {
        const ok = await fetch(`http://${n.api}/readyz`, { signal: AbortSignal.timeout(2_000) })
          .then((r) => r.status === 200)
          .catch(() => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`node ${n.id} not ready; log:\n${this.log(n.id)}`);
        await sleep(POLL_MS);
      }
    }
  }

  /** The leader every node agrees on (`key` reads `/v1/cluster`). */
  async leader(key) {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const seen = await Promise.all(
        this.nodes.map((n) =>
          fetch(`http://${n.api}/v1/cluster`, {
            headers: { Authorization: `Bearer ${key}` },
            signal: AbortSignal.timeout(2_000),
          })
            .then((r) => r.json())
            .then((v) => v.leader_id ?? undefined)
            .catch(() => undefined),
        ),
      );
      if (seen[0] !== undefined && seen.every((l) => l === seen[0])) return seen[0];
      if (Date.now() > deadline) throw new Error(`no agreed leader: ${JSON.stringify(seen)}`);
      await sleep(POLL_MS);
    }
  }

  /** Kills every node (by PID) and removes the temp dir. */
  async stop() {
    await Promise.all(
      this.nodes.map(
        (n) =>
          new Promise((r) => {
            if (n.child.exitCode !== null || n.child.signalCode !== null) return r();
            n.child.once('exit', r);
            process.kill(n.child.pid, 'SIGKILL');
          }),
      ),
    );
    for (const n of this.nodes) children.delete(n.child);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
