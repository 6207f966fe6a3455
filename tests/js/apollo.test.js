// Apollo Client 3 as its docs start it: one HttpLink, nothing else. Subscriptions then go
// over Apollo's multipart HTTP protocol (Accept: multipart/mixed;subscriptionSpec=1.0).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { start, waitFor } from './testbed.js';

const require = createRequire(import.meta.url);
const { ApolloClient, InMemoryCache, HttpLink, gql } = require('@apollo/client/core');

let tb;
before(async () => { tb = await start(); });
after(async () => { await tb.stop(); });

function client() {
  return new ApolloClient({
    link: new HttpLink({ uri: tb.graphql }),
    cache: new InMemoryCache(),
    defaultOptions: { query: { fetchPolicy: 'no-cache' }, mutate: { fetchPolicy: 'no-cache' } },
  });
}

// Apollo adds `__typename` to every selection; the assertions leave it out.
const plain = (d) => JSON.parse(JSON.stringify(d, (k, v) => (k === '__typename' ? undefined : v)));

function collect(c, query, variables = {}) {
  const results = [];
  const waiters = [];
  let completed = false;
  const sub = c.subscribe({ query: gql(query), variables, fetchPolicy: 'no-cache' }).subscribe({
    next: (r) => { results.push(plain(r)); waiters.forEach((w) => w.poke()); },
    error: (e) => { results.push({ error: String(e) }); waiters.forEach((w) => w.poke()); },
    complete: () => { completed = true; waiters.forEach((w) => w.poke()); },
  });
  return {
    results,
    stop: () => sub.unsubscribe(),
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

test('a live query over HttpLink gets the value, then each change a mutation makes', async () => {
  const c = client();
  const sub = collect(c, 'subscription { messages(channel: "apollo") { text } }');
  assert.deepEqual((await sub.next(1)).data, { messages: [] });
  const sent = await c.mutate({ mutation: gql('mutation { sendMessage(channel: "apollo", text: "over multipart") { text } }') });
  assert.deepEqual(plain(sent.data), { sendMessage: { text: 'over multipart' } });
  assert.deepEqual((await sub.next(2)).data, { messages: [{ text: 'over multipart' }] });
  sub.stop();
  // The query of the same data, over the same link, as JSON.
  const q = await c.query({ query: gql('{ messages(channel: "apollo") { text } }') });
  assert.deepEqual(plain(q.data), { messages: [{ text: 'over multipart' }] });
  c.stop();
});

test('upstream events reach an HttpLink subscription, one part each', async () => {
  const c = client();
  const sub = collect(c, 'subscription { itemEvents(list: "mp") { id name } }');
  await tb.until(() => tb.sockets(), (s) => s.open >= 1, 'the upstream socket');
  await tb.send({ list: 'mp', id: '1', name: 'first' });
  assert.deepEqual((await sub.next(1)).data, { itemEvents: { id: '1', name: 'first' } });
  await tb.send({ list: 'mp', id: '2', name: 'second' });
  assert.deepEqual((await sub.next(2)).data, { itemEvents: { id: '2', name: 'second' } });
  sub.stop();
  c.stop();
});

test('a subscription that does not validate ends with its errors', async () => {
  const c = client();
  const sub = collect(c, 'subscription { messages(channel: "apollo") { nope } }');
  const first = await sub.next(1);
  assert.match(JSON.stringify(first), /nope/);
  sub.stop();
  c.stop();
});

test('the multipart response as the protocol writes it', async () => {
  const res = await fetch(tb.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'multipart/mixed;subscriptionSpec="1.0", application/json' },
    body: JSON.stringify({ query: 'subscription { messages(channel: "raw-mp") { text } }' }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"');
  const reader = res.body.getReader();
  let text = '';
  while (!text.includes('}}}')) text += new TextDecoder().decode((await reader.read()).value);
  assert.equal(text, '\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{"payload":{"data":{"messages":[]}}}\r\n--graphql');
  await reader.cancel();

  // A query with only the multipart type acceptable: one part, then the closing delimiter.
  const once = await fetch(tb.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'multipart/mixed;subscriptionSpec=1.0' },
    body: JSON.stringify({ query: '{ messages(channel: "raw-mp") { text } }' }),
  });
  assert.equal(await once.text(), '\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{"payload":{"data":{"messages":[]}}}\r\n--graphql--\r\n');
});
