// Server-Sent Events with the graphql-sse client (distinct connections mode).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'graphql-sse';
import { start, waitFor } from './testbed.js';

let tb;
before(async () => { tb = await start(); });
after(async () => { await tb.stop(); });

function collect(c, query, variables = {}) {
  const results = [];
  const waiters = [];
  let completed = false;
  const dispose = c.subscribe({ query, variables }, {
    next: (r) => { results.push(r); waiters.forEach((w) => w.poke()); },
    error: (e) => { results.push({ error: String(e) }); waiters.forEach((w) => w.poke()); },
    complete: () => { completed = true; waiters.forEach((w) => w.poke()); },
  });
  return {
    results,
    dispose,
    async next(n) {
      const w = waitFor(() => results.length >= n, `result #${n}`);
      waiters.push(w);
      await w.done;
      return results[n - 1];
    },
    async complete() {
      const w = waitFor(() => completed, 'complete');
      waiters.push(w);
      await w.done;
    },
  };
}

test('a live query over SSE gets the value, then each change', async () => {
  const c = createClient({ url: tb.graphql, retryAttempts: 0 });
  const sub = collect(c, 'subscription { messages(channel: "sse") { text } }');
  assert.deepEqual(await sub.next(1), { data: { messages: [] } });
  await tb.query('mutation { sendMessage(channel: "sse", text: "streamed") { id } }');
  assert.deepEqual(await sub.next(2), { data: { messages: [{ text: 'streamed' }] } });
  sub.dispose();
  c.dispose();
});

test('a query over SSE is one next, then complete; errors arrive as a next', async () => {
  const c = createClient({ url: tb.graphql, retryAttempts: 0 });
  const q = collect(c, '{ counter { parity } }');
  assert.deepEqual(await q.next(1), { data: { counter: { parity: 'even' } } });
  await q.complete();
  const bad = collect(c, '{ nope }');
  const err = await bad.next(1);
  assert.match(err.errors?.[0]?.message ?? JSON.stringify(err), /nope/);
  c.dispose();
});

test('the raw event stream follows the protocol', async () => {
  const res = await fetch(tb.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: '{ counter { parity } }' }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(await res.text(), 'event: next\ndata: {"data":{"counter":{"parity":"even"}}}\n\nevent: complete\ndata: \n\n');
});

test('PRIVATE data over SSE: each caller gets their own, never the other\'s', async () => {
  const sub = async (auth) => {
    const res = await fetch(tb.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: auth },
      body: JSON.stringify({ query: 'subscription { whoami { name } }' }),
    });
    const reader = res.body.getReader();
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    return JSON.parse(text.split('data: ')[1].split('\n')[0]);
  };
  assert.deepEqual(await sub('Bearer carol'), { data: { whoami: { name: 'Bearer carol' } } });
  assert.deepEqual(await sub('Bearer dave'), { data: { whoami: { name: 'Bearer dave' } } });
  assert.deepEqual(await sub('Bearer carol'), { data: { whoami: { name: 'Bearer carol' } } });
});
