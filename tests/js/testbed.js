// Starts examples/testbed (a counting REST upstream + the real gateway) and talks to it.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.TESTBED_BIN ?? path.join(root, 'target/debug/examples/testbed');

export async function start(flags = []) {
  const child = spawn(bin, flags, { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`testbed exited with ${code}`)));
    createInterface({ input: child.stdout }).once('line', resolve);
  });
  const { gateway, upstream } = JSON.parse(line);
  const tb = {
    gateway,
    upstream,
    pid: child.pid,
    /** The gateway's /metrics page. */
    async metrics() {
      return (await fetch(`${gateway}/metrics`)).text();
    },
    graphql: `${gateway}/graphql`,
    ws: `${gateway.replace('http', 'ws')}/graphql`,
    async stop() {
      child.stdin.end();
      await new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        setTimeout(() => child.kill('SIGKILL'), 3000).unref();
      });
    },
    /** Requests the upstream got, by "METHOD /path": a list of times in ms. */
    async stats() {
      return (await fetch(`${upstream}/_stats`)).json();
    },
    async count(what) {
      return ((await tb.stats())[what] ?? []).length;
    },
    async reset() {
      await fetch(`${upstream}/_reset`, { method: 'POST' });
    },
    async bump() {
      await fetch(`${upstream}/counter/bump`, { method: 'POST' });
    },
    /** Sockets the upstream's /ws has: { open, total }. */
    async sockets() {
      return (await fetch(`${upstream}/_ws`)).json();
    },
    /** Sends `msg` (an object, or raw text) on every upstream socket. */
    async send(msg) {
      await fetch(`${upstream}/_ws/send`, { method: 'POST', body: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    },
    async kill() {
      await fetch(`${upstream}/_ws/kill`, { method: 'POST' });
    },
    async setItems(list, items) {
      await fetch(`${upstream}/items/${list}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(items) });
    },
    /** Resolves when `check(await probe())` holds, asking again every 20 ms. */
    async until(probe, check, what, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        const v = await probe();
        if (check(v)) return v;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async query(query, variables = {}, headers = {}) {
      const res = await fetch(tb.graphql, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
        body: JSON.stringify({ query, variables }),
      });
      return res.json();
    },
  };
  return tb;
}

/** Resolves when `predicate()` is true, checking on every call of the returned `poke`. */
export function waitFor(predicate, what, ms = 5000) {
  let poke;
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    poke = () => {
      if (predicate()) {
        clearTimeout(timer);
        resolve();
      }
    };
  });
  poke();
  return { done, poke };
}

/**
 * What one subscription delivered: `observer` goes to the client (graphql-ws,
 * graphql-sse, Apollo); each result is kept (through `transform`), an error is kept as
 * `{ error: String(e) }` and ends it, as `complete` does. `next(n)` waits for the n-th
 * result, `complete()` for the end (`{ complete: true }` or `{ error: e }`, e as given).
 */
export function collector(transform = (r) => r) {
  const results = [];
  const waiters = [];
  let ended = null;
  const poke = () => waiters.forEach((w) => w.poke());
  const wait = async (predicate, what) => {
    const w = waitFor(predicate, what);
    waiters.push(w);
    await w.done;
  };
  return {
    results,
    observer: {
      next: (r) => { results.push(transform(r)); poke(); },
      error: (e) => { results.push({ error: String(e) }); ended = { error: e }; poke(); },
      complete: () => { ended = ended ?? { complete: true }; poke(); },
    },
    async next(n) {
      await wait(() => results.length >= n, `result #${n}`);
      return results[n - 1];
    },
    async complete() {
      await wait(() => ended, 'the end');
      return ended;
    },
  };
}
