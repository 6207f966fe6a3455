// Limits on long-lived connections: each exceeded gets a clear refusal, and the client
// already connected is unaffected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { start } from './testbed.js';

let tb;
before(async () => { tb = await start(['--max-connections-per-ip', '2', '--max-operations-per-connection', '2']); });
after(async () => { await tb.stop(); });

async function socket() {
  const ws = new WebSocket(tb.ws, 'graphql-transport-ws');
  const inbox = [];
  let wake = () => {};
  ws.on('message', (m) => { inbox.push(JSON.parse(m.toString())); wake(); });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ type: 'connection_init' }));
  const next = async () => { while (inbox.length === 0) await new Promise((r) => { wake = r; }); return inbox.shift(); };
  assert.equal((await next()).type, 'connection_ack');
  return { ws, next, send: (m) => ws.send(JSON.stringify(m)) };
}

test('operations per connection: the one over the limit gets an error, the others go on', async () => {
  const s = await socket();
  s.send({ id: 'a', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  assert.equal((await s.next()).id, 'a');
  s.send({ id: 'b', type: 'subscribe', payload: { query: 'subscription { counter { parity } }' } });
  assert.equal((await s.next()).id, 'b');
  s.send({ id: 'c', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  const refused = await s.next();
  assert.deepEqual([refused.id, refused.type], ['c', 'error']);
  assert.match(refused.payload[0].message, /too many operations on this connection: 2 at most/);
  // The socket and its operations live on: completing one makes room.
  s.send({ id: 'a', type: 'complete' });
  s.send({ id: 'd', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  assert.equal((await s.next()).id, 'd');
  // A change of the value reaches `d` (`b` selects the parity, which stays).
  await tb.bump();
  const update = await s.next();
  assert.deepEqual([update.id, update.type], ['d', 'next']);
  s.ws.close();
});

test('connections per client IP: the one over the limit gets 503, the others are unaffected', async () => {
  // A gateway of its own, so no socket of the test above is still being let go.
  await tb.stop();
  tb = await start(['--max-connections-per-ip', '2']);
  const one = await socket();
  const two = await socket();
  const refused = await new Promise((resolve) => {
    const ws = new WebSocket(tb.ws, 'graphql-transport-ws');
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    ws.on('open', () => resolve({ status: 101 }));
  });
  assert.equal(refused.status, 503);
  assert.match(JSON.parse(refused.body).errors[0].message, /too many connections from 127.0.0.1: 2 at most/);
  // SSE counts too.
  const sse = await fetch(tb.graphql, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: '{"query":"subscription { counter { value } }"}' });
  assert.equal(sse.status, 503);
  // The two admitted sockets still work.
  two.send({ id: 'q', type: 'subscribe', payload: { query: '{ counter { parity } }' } });
  assert.equal((await two.next()).type, 'next');
  one.ws.close();
  await new Promise((r) => one.ws.once('close', r));
  // A place was freed: a new connection is admitted.
  const three = await socket();
  three.ws.close();
  two.ws.close();
});

test('operations per second on one socket: the excess gets an error, the socket lives on', async () => {
  await tb.stop();
  tb = await start(['--max-operations-per-second', '3']);
  const s = await socket();
  for (let i = 0; i < 5; i++) s.send({ id: `q${i}`, type: 'subscribe', payload: { query: '{ counter { parity } }' } });
  const got = [];
  while (got.filter((m) => m.type !== 'next').length < 5) got.push(await s.next());
  const refused = got.filter((m) => m.type === 'error');
  assert.equal(refused.length, 2, JSON.stringify(got));
  assert.match(refused[0].payload[0].message, /too many operations per second on this connection: 3 at most/);
  assert.equal(got.filter((m) => m.type === 'complete').length, 3);
  s.ws.close();
});

test('a socket with nothing running and nothing said is closed after the idle timeout; a busy one is not', async () => {
  await tb.stop();
  tb = await start(['--ws-idle-timeout-ms', '300']);
  const idle = await socket();
  const busy = await socket();
  busy.send({ id: 'live', type: 'subscribe', payload: { query: 'subscription { counter { value } }' } });
  assert.equal((await busy.next()).type, 'next');
  const closed = await new Promise((r) => idle.ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
  assert.equal(closed.code, 1000);
  assert.match(closed.reason, /^idle/);
  // The busy socket still gets its updates.
  await tb.bump();
  assert.equal((await busy.next()).payload.data.counter.value, 2);
  busy.ws.close();
});

test('a WebSocket frame over the size limit closes only that socket; the gateway total is limited too', async () => {
  await tb.stop();
  tb = await start(['--max-request-body', '10000', '--max-connections', '2']);
  const other = await socket();
  const big = await socket();
  big.send({ id: 'x', type: 'subscribe', payload: { query: `{ counter { value } } # ${'x'.repeat(20000)}` } });
  const closed = await new Promise((r) => big.ws.on('close', (code) => r(code)));
  assert.equal(closed, 1009, 'message too big');
  // The gateway-wide limit: with `other` and a fresh one open, a third is refused. (The
  // big one's place is given back as its socket winds down: retry until it is.)
  let second;
  for (let i = 0; !second; i++) {
    try {
      second = await socket();
    } catch (e) {
      if (i > 50) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const refused = await new Promise((resolve) => {
    const ws = new WebSocket(tb.ws, 'graphql-transport-ws');
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    ws.on('open', () => resolve(101));
  });
  assert.equal(refused, 503);
  // The other client is unaffected.
  other.send({ id: 'q', type: 'subscribe', payload: { query: '{ counter { parity } }' } });
  assert.equal((await other.next()).type, 'next');
  other.ws.close();
  second.ws.close();
});
