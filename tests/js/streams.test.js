// Upstream WebSocket streams: @updates patches live cache entries, @stream turns messages
// into events; one shared upstream socket. The testbed upstream counts its sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { start, waitFor } from './testbed.js';

let tb;
before(async () => { tb = await start(['--socket-grace-ms', '300', '--live-grace-ms', '300']); });
after(async () => { await tb.stop(); });

function client() {
  return createClient({ url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0 });
}

function collect(c, query) {
  const results = [];
  const waiters = new Set();
  const dispose = c.subscribe({ query }, {
    next: (r) => { results.push(r); waiters.forEach((w) => w.poke()); },
    error: (e) => { results.push({ error: String(e) }); waiters.forEach((w) => w.poke()); },
    complete: () => {},
  });
  return {
    results,
    dispose,
    async next(n) {
      const w = waitFor(() => results.length >= n, `result #${n} of ${query}`);
      waiters.add(w);
      await w.done;
      waiters.delete(w);
      return results[n - 1];
    },
  };
}

const a = { id: '1', list: 'L', name: 'apple', qty: 1 };
const b = { id: '2', list: 'L', name: 'banana', qty: 2 };
const pick = ({ id, name, qty }) => ({ id, name, qty });

test('each apply mode gives exactly the expected result; another list reaches nobody', async () => {
  const cases = [
    ['appendItems', 'append', { id: '3', name: 'cherry', qty: 3 }, [a, b, { id: '3', name: 'cherry', qty: 3 }]],
    ['prependItems', 'prepend', { id: '0', name: 'zero', qty: 0 }, [{ id: '0', name: 'zero', qty: 0 }, a, b]],
    ['upsertItems', 'upsert', { id: '2', name: 'blueberry', qty: 9 }, [a, { id: '2', name: 'blueberry', qty: 9 }]],
    ['mergeItems', 'merge', { id: '1', qty: 7 }, [{ ...a, qty: 7 }, b]],
    ['removeItems', 'remove', { id: '1' }, [b]],
  ];
  const c = client();
  for (const [field, mode, msg, expected] of cases) {
    const list = `modes-${mode}`;
    await tb.setItems(list, [a, b].map((x) => ({ ...x, list })));
    const sub = collect(c, `subscription { ${field}(list: "${list}") { id name qty } }`);
    assert.deepEqual((await sub.next(1)).data[field], [a, b].map(pick), field);
    await tb.until(() => tb.sockets(), (s) => s.open === 1, 'the upstream socket');
    await tb.send({ list: 'elsewhere', mode, ...msg });
    await tb.send({ list, mode, ...msg });
    const got = (await sub.next(2)).data[field];
    assert.deepEqual(got, expected.map((x) => ({ name: null, qty: null, ...pick(x) })), `${field}: ${JSON.stringify(got)}`);
    sub.dispose();
  }
  // REPLACE on an object field.
  await tb.setItems('modes-replace', [{ ...a, list: 'modes-replace' }]);
  const rep = collect(c, 'subscription { replaceItem(list: "modes-replace") { id name } }');
  assert.deepEqual((await rep.next(1)).data.replaceItem, { id: '1', name: 'apple' });
  await tb.send({ list: 'modes-replace', mode: 'replace', id: '5', name: 'elder' });
  assert.deepEqual((await rep.next(2)).data.replaceItem, { id: '5', name: 'elder' });
  rep.dispose();
  // A payload picked out of an envelope with `select`.
  await tb.setItems('env', []);
  const env = collect(c, 'subscription { enveloped(list: "env") { id name } }');
  assert.deepEqual((await env.next(1)).data.enveloped, []);
  await tb.send({ type: 'created', data: { item: { id: '8', list: 'env', name: 'fig' } } });
  assert.deepEqual((await env.next(2)).data.enveloped, [{ id: '8', name: 'fig' }]);
  env.dispose();
  await c.dispose();
});

test('REFETCH refetches once however many messages arrive meanwhile; junk is skipped', async () => {
  const c = client();
  await tb.setItems('slow-r', [{ ...a, list: 'slow-r' }]);
  const sub = collect(c, 'subscription { refetchItems(list: "slow-r") { id name } }');
  assert.deepEqual((await sub.next(1)).data.refetchItems, [{ id: '1', name: 'apple' }]);
  await tb.until(() => tb.sockets(), (s) => s.open === 1, 'the upstream socket');
  const before = await tb.count('GET /items/slow-r');
  await tb.setItems('slow-r', [{ ...a, list: 'slow-r' }, { ...b, list: 'slow-r' }]);
  await tb.send('this is not JSON');
  for (let i = 0; i < 5; i++) await tb.send({ list: 'slow-r', mode: 'refetch' });
  assert.deepEqual((await sub.next(2)).data.refetchItems, [{ id: '1', name: 'apple' }, { id: '2', name: 'banana' }]);
  assert.equal(await tb.count('GET /items/slow-r'), before + 1, 'five messages during one refetch: one refetch');
  sub.dispose();
  await c.dispose();
});

test('100 subscribers over 10 connections, live and events mixed: one upstream socket, closed after everyone leaves', async () => {
  await tb.until(() => tb.sockets(), (s) => s.open === 0, 'no socket left from earlier tests', 5000);
  const before = (await tb.sockets()).total;
  await tb.setItems('mix', [{ id: '1', list: 'mix', name: 'one', ownerId: '1' }]);
  const clients = Array.from({ length: 10 }, client);
  const live = [];
  const events = [];
  for (let i = 0; i < 100; i++) {
    const c = clients[i % 10];
    if (i % 2 === 0) live.push(collect(c, 'subscription { appendItems(list: "mix") { id name } }'));
    else events.push(collect(c, 'subscription { itemEvents(list: "mix") { id name owner { name } } }'));
  }
  for (const s of live) await s.next(1);
  // Event subscriptions have no first result: probe until each one is listening.
  for (let n = 1; ; n++) {
    await tb.send({ list: 'mix', mode: 'probe', id: `p${n}`, name: 'probe', ownerId: '2' });
    await new Promise((r) => setTimeout(r, 30));
    if (events.every((e) => e.results.length > 0)) break;
    assert.ok(n < 100, 'event subscribers started listening');
  }
  // Let every probe in flight land: after a last one, nothing else is pending.
  await tb.send({ list: 'mix', mode: 'probe', id: 'last-probe', name: 'probe', ownerId: '2' });
  const settled = waitFor(() => events.every((e) => e.results.at(-1)?.data?.itemEvents?.id === 'last-probe'), 'the last probe everywhere');
  const t = setInterval(() => settled.poke(), 10);
  await settled.done;
  clearInterval(t);
  const sockets = await tb.sockets();
  assert.deepEqual([sockets.open, sockets.total - before], [1, 1], 'one upstream socket for 100 subscribers');
  assert.equal(sockets.key, 'k1', "the @upstream's headers went with the handshake");
  const seen = events.map((e) => e.results.length);
  await tb.send({ list: 'mix', mode: 'append', id: '2', name: 'two', ownerId: '1' });
  for (const s of live) assert.deepEqual((await s.next(2)).data.appendItems, [{ id: '1', name: 'one' }, { id: '2', name: 'two' }]);
  for (const [i, e] of events.entries()) {
    const ev = await e.next(seen[i] + 1);
    assert.deepEqual(ev.data.itemEvents, { id: '2', name: 'two', owner: { name: 'user 1' } }, 'nested @rest resolved per event');
  }
  for (const s of [...live, ...events]) s.dispose();
  await Promise.all(clients.map((c) => c.dispose()));
  await tb.until(() => tb.sockets(), (s) => s.open === 0, 'the socket closes after the grace period', 5000);
});

test('a dropped upstream socket reconnects, each fed entry refetches once, and nobody is unsubscribed', async () => {
  const c = client();
  await tb.setItems('rc', [{ ...a, list: 'rc' }]);
  const live = collect(c, 'subscription { appendItems(list: "rc") { id name } }');
  const ev = collect(c, 'subscription { itemEvents(list: "rc") { id } }');
  assert.deepEqual((await live.next(1)).data.appendItems, [{ id: '1', name: 'apple' }]);
  const { total } = await tb.until(() => tb.sockets(), (s) => s.open === 1, 'the upstream socket');
  const fetched = await tb.count('GET /items/rc');
  // Changed while the socket is down: only a refetch can know.
  await tb.setItems('rc', [{ ...a, list: 'rc' }, { ...b, list: 'rc' }]);
  await tb.kill();
  assert.deepEqual((await live.next(2)).data.appendItems, [{ id: '1', name: 'apple' }, { id: '2', name: 'banana' }]);
  const after = await tb.sockets();
  assert.equal(after.total, total + 1, 'reconnected once');
  assert.equal(await tb.count('GET /items/rc'), fetched + 1, 'one refetch for the fed entry');
  const metrics = await (await fetch(`${tb.gateway}/metrics`)).text();
  assert.match(metrics, /^livegate_upstream_socket_reconnects_total [1-9]/m, 'the reconnect is counted');
  assert.match(metrics, /^livegate_upstream_sockets_open 1$/m);
  // Both subscriptions still work on the new socket.
  await tb.send({ list: 'rc', mode: 'append', id: '3', name: 'cherry' });
  assert.deepEqual((await live.next(3)).data.appendItems.map((x) => x.id), ['1', '2', '3']);
  assert.equal((await ev.next(1)).data.itemEvents.id, '3');
  live.dispose();
  ev.dispose();
  await c.dispose();
});
