// Live queries with the official graphql-ws client, over graphql-transport-ws.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { start, waitFor } from './testbed.js';

let tb;
before(async () => { tb = await start(); });
after(async () => { await tb.stop(); });

function client(extra = {}) {
  return createClient({ url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, ...extra });
}

/** Subscribes and collects every result; `next(n)` waits for the n-th. */
function collect(c, query, variables = {}) {
  const results = [];
  const waiters = [];
  const dispose = c.subscribe({ query, variables }, {
    next: (r) => { results.push(r); waiters.forEach((w) => w.poke()); },
    error: (e) => { results.push({ error: e }); waiters.forEach((w) => w.poke()); },
    complete: () => {},
  });
  return {
    results,
    dispose,
    async next(n, what = `result #${n}`) {
      const w = waitFor(() => results.length >= n, what);
      waiters.push(w);
      await w.done;
      return results[n - 1];
    },
  };
}

test('a live query gets the current value, then the change a mutation makes', async () => {
  const c = client();
  const sub = collect(c, 'subscription { messages(channel: "a") { text author { name } } }');
  assert.deepEqual(await sub.next(1), { data: { messages: [] } });
  await tb.query('mutation { sendMessage(channel: "a", text: "hello") { id } }');
  assert.deepEqual(await sub.next(2), { data: { messages: [{ text: 'hello', author: { name: 'user 1' } }] } });
  // A nested entry changing (the author's name) is a change of the selection too.
  await tb.query('mutation { renameUser(id: "1", name: "Ada") { id } }');
  assert.deepEqual(await sub.next(3), { data: { messages: [{ text: 'hello', author: { name: 'Ada' } }] } });
  sub.dispose();
  await c.dispose();
});

test('a change that leaves the selection as it was sends nothing', async () => {
  const c = client();
  const parity = collect(c, 'subscription { counter { parity } }');
  const value = collect(c, 'subscription { counter { value } }');
  await parity.next(1);
  const first = (await value.next(1)).data.counter.value;
  await tb.bump(); // +2: the parity stays
  assert.equal((await value.next(2)).data.counter.value, first + 2);
  await tb.bump();
  assert.equal((await value.next(3)).data.counter.value, first + 4);
  assert.equal(parity.results.length, 1, 'the parity subscriber got no update');
  parity.dispose();
  value.dispose();
  await c.dispose();
});

test('queries and mutations run over the socket too', async () => {
  const c = client();
  const q = collect(c, '{ messages(channel: "q") { id } }');
  assert.deepEqual(await q.next(1), { data: { messages: [] } });
  const m = collect(c, 'mutation { sendMessage(channel: "q", text: "x") { text } }');
  assert.deepEqual(await m.next(1), { data: { sendMessage: { text: 'x' } } });
  await c.dispose();
});

test('connection_init payload reaches upstreams as headers', async () => {
  const alice = client({ connectionParams: { Authorization: 'Bearer alice' } });
  const bob = client({ connectionParams: { headers: { authorization: 'Bearer bob' } } });
  const a = collect(alice, 'subscription { whoami { name } }');
  const b = collect(bob, 'subscription { whoami { name } }');
  assert.deepEqual(await a.next(1), { data: { whoami: { name: 'Bearer alice' } } });
  assert.deepEqual(await b.next(1), { data: { whoami: { name: 'Bearer bob' } } });
  await alice.dispose();
  await bob.dispose();
});
