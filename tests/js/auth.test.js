// Tokens on long-lived sockets with the real clients: a graphql-ws subscription closed at
// its token's exp (4403), and one renewed before it by a ping carrying a new token; the
// legacy client refused with connection_error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import pkg from 'subscriptions-transport-ws';
import { start, collector, waitFor } from './testbed.js';

const SECRET = 'a secret the test and the gateway share';
let tb;
before(async () => { tb = await start(['--jwt-secret', SECRET]); });
after(async () => { await tb.stop(); });

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
/** An HS256 token of `sub`, valid for `ttl` seconds from now. */
function token(sub, ttl) {
  const exp = Math.floor(Date.now() / 1000) + ttl;
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp })}`;
  const sig = createHmac('sha256', SECRET).update(head).digest('base64url');
  return { jwt: `${head}.${sig}`, exp };
}

/** Resolves once the wall clock is past `exp` (seconds) by `ms`. */
function past(exp, ms = 1200) {
  const wait = exp * 1000 + ms - Date.now();
  return new Promise((r) => setTimeout(r, Math.max(0, wait)));
}

test('a graphql-ws subscription is closed with 4403 when its token expires', async () => {
  const { jwt } = token('ann', 2);
  const closed = [];
  const closedFor = waitFor(() => closed.length > 0, 'the close');
  const c = createClient({
    url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0,
    connectionParams: { Authorization: `Bearer ${jwt}` },
    on: { closed: (e) => { closed.push(e); closedFor.poke(); } },
  });
  const got = collector();
  c.subscribe({ query: 'subscription { counter { value } }' }, got.observer);
  assert.ok((await got.next(1)).data.counter, 'the subscription ran');
  await closedFor.done;
  assert.equal(closed[0].code, 4403);
  assert.match(closed[0].reason, /expired/);
  await c.dispose();
});

test('a graphql-ws client renews its token with a ping and keeps its subscription', async () => {
  const first = token('ann', 2);
  let socket;
  const pongs = [];
  const ponged = waitFor(() => pongs.length > 0, 'the pong');
  const closed = [];
  const c = createClient({
    url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0,
    connectionParams: { Authorization: `Bearer ${first.jwt}` },
    on: {
      opened: (s) => { socket = s; },
      pong: (received, payload) => { if (received && payload?.auth) { pongs.push(payload); ponged.poke(); } },
      closed: (e) => closed.push(e),
    },
  });
  const got = collector();
  c.subscribe({ query: 'subscription { counter { value } }' }, got.observer);
  const before = (await got.next(1)).data.counter.value;
  const renewed = token('ann', 3600);
  socket.send(JSON.stringify({ type: 'ping', payload: { Authorization: `Bearer ${renewed.jwt}` } }));
  await ponged.done;
  assert.deepEqual(pongs[0], { auth: 'renewed', expires: renewed.exp });
  // Past the first token's end, the socket is open and the subscription still pushes.
  await past(first.exp);
  await tb.bump();
  const after = await got.next(2);
  assert.equal(after.data.counter.value, before + 2);
  assert.deepEqual(closed, [], 'never closed');
  await c.dispose();
});

test('the legacy client gets connection_error for an expired token', async () => {
  const { SubscriptionClient } = pkg;
  const errors = [];
  const failed = waitFor(() => errors.length > 0, 'connection_error');
  const c = new SubscriptionClient(tb.ws, {
    reconnect: false,
    connectionParams: { authorization: `Bearer ${token('ann', -60).jwt}` },
    connectionCallback: (e) => { if (e) { errors.push(e); failed.poke(); } },
  }, WebSocket);
  await failed.done;
  assert.match(String(errors[0].message ?? errors[0]), /expired/);
  c.close();
});
