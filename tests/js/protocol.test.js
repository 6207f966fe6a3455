// graphql-transport-ws conformance (graphql-ws PROTOCOL.md), one test per close code and
// message type, over a raw socket so every frame is ours to choose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { start } from './testbed.js';

let tb;
before(async () => { tb = await start(['--ws-init-timeout-ms', '300']); });
after(async () => { await tb.stop(); });

/** A raw socket with an inbox: `next()` is the next message, `closed` the close event. */
async function socket(protocol = 'graphql-transport-ws') {
  const ws = new WebSocket(tb.ws, protocol);
  const inbox = [];
  let wake = () => {};
  ws.on('message', (m) => { inbox.push(JSON.parse(m.toString())); wake(); });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  return {
    ws,
    closed,
    send: (m) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)),
    async next() {
      while (inbox.length === 0) await new Promise((r) => { wake = r; });
      return inbox.shift();
    },
    async init() {
      this.send({ type: 'connection_init' });
      assert.deepEqual(await this.next(), { type: 'connection_ack' });
    },
  };
}

test('4408 when connection_init does not come in time', async () => {
  const s = await socket();
  assert.deepEqual(await s.closed, { code: 4408, reason: 'Connection initialisation timeout' });
});

test('4429 on a second connection_init', async () => {
  const s = await socket();
  await s.init();
  s.send({ type: 'connection_init' });
  assert.deepEqual(await s.closed, { code: 4429, reason: 'Too many initialisation requests' });
});

test('4401 on subscribe before the ack', async () => {
  const s = await socket();
  s.send({ id: '1', type: 'subscribe', payload: { query: '{ counter { value } }' } });
  assert.deepEqual(await s.closed, { code: 4401, reason: 'Unauthorized' });
});

test('4409 on a duplicate operation id', async () => {
  const s = await socket();
  await s.init();
  const sub = { id: 'dup', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } };
  s.send(sub);
  assert.equal((await s.next()).type, 'next');
  s.send(sub);
  assert.deepEqual(await s.closed, { code: 4409, reason: 'Subscriber for dup already exists' });
});

test('4400 on an invalid message', async () => {
  for (const bad of ['not json', '{"type": "nope"}', '{"id": 1, "type": "subscribe"}', '{"type":"subscribe","id":"x","payload":{}}']) {
    const s = await socket();
    await s.init();
    s.send(bad);
    const { code, reason } = await s.closed;
    assert.equal(code, 4400, bad);
    assert.match(reason, /^Invalid message received/, bad);
  }
});

test('4406 when the subprotocol is neither graphql-transport-ws nor graphql-ws', async () => {
  const ws = new WebSocket(tb.ws, 'wamp');
  const result = await new Promise((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.on('error', (e) => resolve({ error: e.message }));
  });
  // The server picks no subprotocol; a client that insisted on one may fail the handshake
  // itself, otherwise the server closes with 4406.
  assert.ok(result.error?.includes('Server sent no subprotocol') || result.code === 4406, JSON.stringify(result));
  const plain = new WebSocket(tb.ws);
  const closed = await new Promise((resolve) => plain.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  assert.equal(closed.code, 4406);
  assert.match(closed.reason, /Subprotocol not acceptable/);
});

test('ping gets pong (with its payload), pong is accepted, and the socket lives on', async () => {
  const s = await socket();
  await s.init();
  s.send({ type: 'ping', payload: { n: 1 } });
  assert.deepEqual(await s.next(), { type: 'pong', payload: { n: 1 } });
  s.send({ type: 'pong' });
  s.send({ type: 'ping' });
  assert.deepEqual(await s.next(), { type: 'pong' });
  s.ws.close(1000);
});

test('a query gets next then complete; a bad one gets error and the socket lives on', async () => {
  const s = await socket();
  await s.init();
  s.send({ id: 'q', type: 'subscribe', payload: { query: '{ counter { value } }' } });
  assert.equal((await s.next()).type, 'next');
  assert.deepEqual(await s.next(), { id: 'q', type: 'complete' });
  s.send({ id: 'bad', type: 'subscribe', payload: { query: '{ nope }' } });
  const err = await s.next();
  assert.equal(err.type, 'error');
  assert.equal(err.id, 'bad');
  assert.match(err.payload[0].message, /nope/);
  s.send({ id: 'bad2', type: 'subscribe', payload: { query: 'subscription { counter { value } messages(channel: "x") { id } }' } });
  assert.deepEqual(await s.next(), { id: 'bad2', type: 'error', payload: [{ message: 'a subscription selects exactly one root field' }] });
  // The id of a finished operation may be used again.
  s.send({ id: 'q', type: 'subscribe', payload: { query: '{ counter { parity } }' } });
  assert.equal((await s.next()).type, 'next');
  assert.deepEqual(await s.next(), { id: 'q', type: 'complete' });
  s.ws.close(1000);
});

test('complete from the client stops a live query; nothing more is sent for it', async () => {
  const s = await socket();
  await s.init();
  s.send({ id: 'c', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  const first = await s.next();
  assert.equal(first.type, 'next');
  s.send({ id: 'c', type: 'complete' });
  // Prove the server has handled the complete (messages are handled in order) ...
  s.send({ type: 'ping' });
  assert.deepEqual(await s.next(), { type: 'pong' });
  // ... then change the value, watched by a second live query: a still-running `c`
  // would be pushed the same change.
  s.send({ id: 'probe', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  assert.equal((await s.next()).id, 'probe');
  await tb.bump();
  const update = await s.next();
  assert.equal(update.id, 'probe', 'nothing is sent for the completed operation');
  assert.equal(update.payload.data.counter.value, first.payload.data.counter.value + 2);
  s.ws.close(1000);
});
