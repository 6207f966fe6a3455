// The economy: N subscribers of one entry cost the upstream what one does. Counts come
// from the testbed upstream, which records every request it gets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { start, waitFor } from './testbed.js';

const SECRET = 'testbed-secret';
let tb;
before(async () => { tb = await start(['--webhook-secret', SECRET, '--live-grace-ms', '300']); });
after(async () => { await tb.stop(); });

/** `n` subscriptions spread over `connections` graphql-ws clients. */
function fleet(n, connections, query) {
  const clients = Array.from({ length: connections }, () => createClient({ url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0 }));
  const latest = Array.from({ length: n }, () => undefined);
  const counts = new Array(n).fill(0);
  const waiters = new Set();
  const disposers = [];
  for (let i = 0; i < n; i++) {
    disposers.push(clients[i % connections].subscribe({ query }, {
      next: (r) => { latest[i] = r; counts[i]++; waiters.forEach((w) => w.poke()); },
      error: (e) => { latest[i] = { error: String(e) }; waiters.forEach((w) => w.poke()); },
      complete: () => {},
    }));
  }
  return {
    latest,
    counts,
    async all(pred, what) {
      const w = waitFor(() => latest.every((r) => r && pred(r)), what, 10000);
      waiters.add(w);
      await w.done;
      waiters.delete(w);
    },
    async stop() {
      disposers.forEach((d) => d());
      await Promise.all(clients.map((c) => c.dispose()));
    },
  };
}

function sign(body) {
  return 'sha256=' + crypto.createHmac('sha256', SECRET).update(body).digest('hex');
}

test('100 subscribers over 10 connections: one upstream request per invalidation', async () => {
  await tb.query('mutation { sendMessage(channel: "eco", text: "first") { id } }');
  await tb.reset();
  const f = fleet(100, 10, 'subscription { messages(channel: "eco") { text } }');
  await f.all((r) => r.data?.messages?.length === 1, 'the current value for all 100');
  assert.equal(await tb.count('GET /messages/eco'), 1, 'one fetch for 100 subscribers');

  // A mutation through the gateway: invalidates, one refetch, one push to each.
  await tb.query('mutation { sendMessage(channel: "eco", text: "second") { id } }');
  await f.all((r) => r.data?.messages?.length === 2, 'the change for all 100');
  assert.equal(await tb.count('GET /messages/eco'), 2);
  assert.ok(f.counts.every((c) => c === 2), 'one push each');

  // The webhook: another service changed the data behind the gateway's back.
  await fetch(`${tb.upstream}/messages/eco`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text":"third"}' });
  const body = JSON.stringify({ tags: ['messages:eco'] });
  const res = await fetch(`${tb.gateway}/hooks/invalidate`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-livegate-signature': sign(body) }, body });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { invalidated: 1, tags: ['messages:eco'] });
  await f.all((r) => r.data?.messages?.length === 3, 'the webhook change for all 100');
  assert.equal(await tb.count('GET /messages/eco'), 3, 'one refetch per invalidation, not 100');
  assert.ok(f.counts.every((c) => c === 3));
  await f.stop();
});

test('polling: one poller for 100 subscribers, stopped a grace period after the last leaves', async () => {
  await tb.reset();
  const f = fleet(100, 10, 'subscription { counter { value } }');
  await f.all((r) => r.data?.counter, 'the current value');
  const start = f.latest[0].data.counter.value;
  for (const step of [1, 2, 3]) {
    await tb.bump();
    await f.all((r) => r.data?.counter?.value === start + 2 * step, `bump ${step} reached everyone`);
  }
  const polls = (await tb.stats())['GET /counter'];
  // pollMs is 100: 100 pollers would make ~100 requests per 100 ms; one makes one.
  const gaps = polls.slice(1).map((t, i) => t - polls[i]);
  assert.ok(gaps.every((g) => g >= 50), `one request per interval, gaps: ${gaps}`);
  await f.stop();
  // Past the 300 ms grace the poller stops: the count no longer moves.
  await new Promise((r) => setTimeout(r, 700));
  const settled = await tb.count('GET /counter');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await tb.count('GET /counter'), settled, 'no polling without subscribers');
});

test('a client that never reads slows nobody else, and gets the latest value when it does', async () => {
  // Big results (100 kB each, see --pad-bytes), so that what the slow client does not read
  // overflows every buffer between it and the gateway.
  const big = await start(['--webhook-secret', SECRET, '--pad-bytes', '100000']);
  const change = async () => {
    await fetch(`${big.upstream}/counter/bump`, { method: 'POST' });
    const body = JSON.stringify({ tags: ['counter'] });
    await fetch(`${big.gateway}/hooks/invalidate`, { method: 'POST', headers: { 'x-livegate-signature': sign(body) }, body });
  };
  const query = 'subscription { counter { value pad } }';
  // A raw socket that stops reading after its first result.
  const slow = new WebSocket(big.ws, 'graphql-transport-ws');
  const seen = [];
  const first = waitFor(() => seen.length > 0, 'slow client first value');
  slow.on('message', (m) => {
    const msg = JSON.parse(m.toString());
    if (msg.type === 'next') seen.push(msg.payload.data.counter.value);
    first.poke();
  });
  await new Promise((r) => slow.once('open', r));
  slow.send(JSON.stringify({ type: 'connection_init' }));
  slow.send(JSON.stringify({ id: 's', type: 'subscribe', payload: { query } }));
  await first.done;
  slow._socket.pause();

  const fast = createClient({ url: big.ws, webSocketImpl: WebSocket, retryAttempts: 0 });
  let latest;
  const waiters = new Set();
  const dispose = fast.subscribe({ query }, { next: (r) => { latest = r.data.counter.value; waiters.forEach((w) => w.poke()); }, error: () => {}, complete: () => {} });
  const reach = async (v) => { const w = waitFor(() => latest === v, `fast client at ${v}`, 15000); waiters.add(w); await w.done; waiters.delete(w); };
  await reach(0);
  const changes = 100;
  for (let i = 1; i <= changes; i++) {
    await change();
    await reach(2 * i); // the fast client is not held back by the slow one
  }
  const before = seen.length;
  slow._socket.resume();
  const caughtUp = waitFor(() => seen.at(-1) === 2 * changes, 'slow client catches up', 10000);
  const t = setInterval(() => caughtUp.poke(), 10);
  await caughtUp.done;
  clearInterval(t);
  const got = seen.length - before;
  assert.ok(got < changes, `conflated: the slow client got ${got} results for ${changes} changes, ending with the latest`);
  slow.close();
  dispose();
  await fast.dispose();
  await big.stop();
});
