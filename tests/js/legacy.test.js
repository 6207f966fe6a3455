// The legacy `graphql-ws` subprotocol with subscriptions-transport-ws's own client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import pkg from 'subscriptions-transport-ws';
import { start, collector, waitFor } from './testbed.js';

const { SubscriptionClient } = pkg;
let tb;
before(async () => { tb = await start(); });
after(async () => { await tb.stop(); });

function client(connectionParams = {}) {
  return new SubscriptionClient(tb.ws, { reconnect: false, connectionParams }, WebSocket);
}

function collect(c, query, variables = {}) {
  const got = collector();
  const sub = c.request({ query, variables }).subscribe(got.observer);
  return { ...got, stop: () => sub.unsubscribe() };
}

test('a live query over the legacy protocol gets the value, then each change', async () => {
  const c = client();
  const sub = collect(c, 'subscription($c: String!) { messages(channel: $c) { text } }', { c: 'legacy' });
  assert.deepEqual(await sub.next(1), { data: { messages: [] } });
  await tb.query('mutation { sendMessage(channel: "legacy", text: "old school") { id } }');
  assert.deepEqual(await sub.next(2), { data: { messages: [{ text: 'old school' }] } });
  sub.stop();
  c.close();
});

test('queries and mutations, and errors, over the legacy protocol', async () => {
  const c = client({ authorization: 'Bearer legacy' });
  const q = collect(c, '{ whoami { name } }');
  assert.deepEqual(await q.next(1), { data: { whoami: { name: 'Bearer legacy' } } });
  const bad = collect(c, '{ nope }');
  const err = await bad.next(1);
  assert.ok(err.error, JSON.stringify(err));
  // The connection lives on.
  const m = collect(c, 'mutation { sendMessage(channel: "l2", text: "y") { text } }');
  assert.deepEqual(await m.next(1), { data: { sendMessage: { text: 'y' } } });
  c.close();
});

test('the server sends ka keep-alives after the ack', async () => {
  const ws = new WebSocket(tb.ws, 'graphql-ws');
  const messages = [];
  const w = waitFor(() => messages.some((m) => m.type === 'ka'), 'ka');
  ws.on('message', (m) => { messages.push(JSON.parse(m.toString())); w.poke(); });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  await w.done;
  assert.equal(messages[0].type, 'connection_ack');
  ws.send(JSON.stringify({ type: 'connection_terminate' }));
  const code = await new Promise((r) => ws.on('close', r));
  assert.equal(code, 1000);
});

test('stop ends a legacy operation: no more data for its id', async () => {
  const ws = new WebSocket(tb.ws, 'graphql-ws');
  const inbox = [];
  let wake = () => {};
  ws.on('message', (m) => { const msg = JSON.parse(m.toString()); if (msg.type !== 'ka') { inbox.push(msg); wake(); } });
  const next = async () => { while (inbox.length === 0) await new Promise((r) => { wake = r; }); return inbox.shift(); };
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'connection_init' }));
  assert.equal((await next()).type, 'connection_ack');
  ws.send(JSON.stringify({ id: 'a', type: 'start', payload: { query: 'subscription { counter { value } }' } }));
  const first = await next();
  assert.equal(first.type, 'data');
  ws.send(JSON.stringify({ id: 'a', type: 'stop' }));
  ws.send(JSON.stringify({ id: 'b', type: 'start', payload: { query: 'subscription { counter { value } }' } }));
  assert.equal((await next()).id, 'b');
  await tb.bump();
  const update = await next();
  assert.deepEqual([update.id, update.type], ['b', 'data'], 'nothing more for the stopped operation');
  assert.equal(update.payload.data.counter.value, first.payload.data.counter.value + 2);
  ws.close();
});
