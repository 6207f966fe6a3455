// Server-Sent Events with the graphql-sse client (distinct connections mode).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'graphql-sse';
import { start, collector } from './testbed.js';

let tb;
before(async () => { tb = await start(); });
after(async () => { await tb.stop(); });

function collect(c, query, variables = {}) {
  const got = collector();
  return { ...got, dispose: c.subscribe({ query, variables }, got.observer) };
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

test('single connection mode: one stream carries every operation of the client', async () => {
  const c = createClient({ url: tb.graphql, singleConnection: true, retryAttempts: 0 });
  const live = collect(c, 'subscription { messages(channel: "single") { text } }');
  const counter = collect(c, '{ counter { parity } }');
  assert.deepEqual(await live.next(1), { data: { messages: [] } });
  assert.deepEqual(await counter.next(1), { data: { counter: { parity: 'even' } } });
  await counter.complete();
  const events = collect(c, 'subscription { itemEvents(list: "single") { id name } }');
  await tb.query('mutation { sendMessage(channel: "single", text: "one stream") { id } }');
  assert.deepEqual(await live.next(2), { data: { messages: [{ text: 'one stream' }] } });
  await tb.until(() => tb.sockets(), (s) => s.open >= 1, 'the upstream socket');
  await tb.send({ list: 'single', id: '9', name: 'nine' });
  assert.deepEqual(await events.next(1), { data: { itemEvents: { id: '9', name: 'nine' } } });
  // Stopping one (DELETE) leaves the others running.
  live.dispose();
  await tb.send({ list: 'single', id: '10', name: 'ten' });
  assert.deepEqual(await events.next(2), { data: { itemEvents: { id: '10', name: 'ten' } } });
  events.dispose();
  c.dispose();
});

test('single connection mode: the protocol status codes', async () => {
  const put = await fetch(tb.graphql, { method: 'PUT' });
  assert.equal(put.status, 201);
  assert.match(put.headers.get('content-type'), /^text\/plain/);
  const token = await put.text();
  const h = { 'x-graphql-event-stream-token': token };
  // Results posted before the stream opens wait for it.
  const posted = await fetch(tb.graphql, {
    method: 'POST',
    headers: { ...h, 'content-type': 'application/json' },
    body: JSON.stringify({ query: '{ counter { parity } }', extensions: { operationId: 'q1' } }),
  });
  assert.equal(posted.status, 202);
  const noId = await fetch(tb.graphql, { method: 'POST', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ counter { parity } }' }) });
  assert.equal(noId.status, 400);
  const invalid = await fetch(tb.graphql, { method: 'POST', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ nope }', extensions: { operationId: 'bad' } }) });
  assert.equal(invalid.status, 400);
  assert.match(await invalid.text(), /nope/);
  const unknown = await fetch(tb.graphql, { method: 'POST', headers: { 'x-graphql-event-stream-token': 'nope', 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ counter { parity } }', extensions: { operationId: 'x' } }) });
  assert.equal(unknown.status, 404);
  const stream = await fetch(`${tb.graphql}?token=${token}`, { headers: { accept: 'text/event-stream' } });
  assert.equal(stream.status, 200);
  const second = await fetch(tb.graphql, { headers: { ...h, accept: 'text/event-stream' } });
  assert.equal(second.status, 409);
  const reader = stream.body.getReader();
  let text = '';
  while (!text.includes('event: complete')) text += new TextDecoder().decode((await reader.read()).value);
  assert.equal(text, 'event: next\ndata: {"id":"q1","payload":{"data":{"counter":{"parity":"even"}}}}\n\nevent: complete\ndata: {"id":"q1"}\n\n');
  const live = await fetch(tb.graphql, { method: 'POST', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ query: 'subscription { counter { parity } }', extensions: { operationId: 'live' } }) });
  assert.equal(live.status, 202);
  const dup = await fetch(tb.graphql, { method: 'POST', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ query: 'subscription { counter { parity } }', extensions: { operationId: 'live' } }) });
  assert.equal(dup.status, 409);
  assert.equal((await fetch(`${tb.graphql}?operationId=live`, { method: 'DELETE', headers: h })).status, 200);
  assert.equal((await fetch(tb.graphql, { method: 'DELETE', headers: h })).status, 400);
  assert.equal((await fetch(`${tb.graphql}?operationId=live`, { method: 'DELETE', headers: { 'x-graphql-event-stream-token': 'nope' } })).status, 404);
  await reader.cancel();
  // The stream closed: the reservation is gone.
  await tb.until(
    async () => (await fetch(tb.graphql, { method: 'POST', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ counter { parity } }', extensions: { operationId: 'late' } }) })).status,
    (s) => s === 404,
    'the reservation to end with its stream',
  );
});
