// Graceful shutdown: the official graphql-ws client (retryAttempts set) sees its socket
// closed with a code it retries on, reconnects to the gateway started in its place on the
// same port, re-subscribes by itself and receives the next update.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { start, waitFor } from './testbed.js';

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

test('a restarted gateway gets its subscribers back without the test touching them', async () => {
  const port = await freePort();
  let tb = await start(['--port', String(port)]);
  const closes = [];
  const c = createClient({
    url: tb.ws,
    webSocketImpl: WebSocket,
    retryAttempts: 20,
    retryWait: () => new Promise((r) => setTimeout(r, 100)),
    on: { closed: (e) => { closes.push(e.code); w.forEach((x) => x.poke()); } },
  });
  const results = [];
  let error;
  const w = new Set();
  c.subscribe({ query: 'subscription { counter { value } }' }, {
    next: (r) => { results.push(r.data.counter.value); w.forEach((x) => x.poke()); },
    error: (e) => { error = e; w.forEach((x) => x.poke()); },
    complete: () => {},
  });
  const reach = async (what, pred) => { const x = waitFor(() => pred() || error, what, 10000); w.add(x); await x.done; w.delete(x); assert.equal(error, undefined); };
  await reach('first result', () => results.length === 1);
  assert.deepEqual(results, [0]);

  await tb.stop(); // SIGTERM-equivalent: the testbed's shutdown future completes
  await reach('the close', () => closes.length >= 1);
  assert.equal(closes[0], 1012, 'closed with 1012 Service Restart');

  tb = await start(['--port', String(port)]);
  // The client reconnects and re-subscribes on its own: the new gateway's value arrives.
  await reach('result from the new gateway', () => results.length === 2);
  await tb.bump();
  await reach('the next update', () => results.length === 3);
  assert.deepEqual(results, [0, 0, 2]);
  await c.dispose();
  await tb.stop();
});
