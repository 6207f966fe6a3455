// Apollo Client 3 as its docs start it: one HttpLink, nothing else. Subscriptions then go
// over Apollo's multipart HTTP protocol (Accept: multipart/mixed;subscriptionSpec=1.0).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { start, collector } from './testbed.js';

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
  const got = collector(plain);
  const sub = c.subscribe({ query: gql(query), variables, fetchPolicy: 'no-cache' }).subscribe(got.observer);
  return { ...got, stop: () => sub.unsubscribe() };
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
  assert.equal(res.headers.get('content-type'), 'multipart/mixed;boundary=graphql;subscriptionSpec=1.0');
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

test('createPersistedQueryLink: the hash alone first, the text once, then the hash alone', async () => {
  const { createPersistedQueryLink } = require('@apollo/client/link/persisted-queries');
  const { createHash } = await import('node:crypto');
  const sent = [];
  const link = createPersistedQueryLink({ sha256: (q) => createHash('sha256').update(q).digest('hex') }).concat(
    new HttpLink({
      uri: tb.graphql,
      fetch: async (uri, init) => { sent.push(JSON.parse(init.body)); return fetch(uri, init); },
    }),
  );
  const query = gql('query Apq { counter { parity } }');
  const first = new ApolloClient({ link, cache: new InMemoryCache() });
  assert.deepEqual(plain((await first.query({ query, fetchPolicy: 'no-cache' })).data), { counter: { parity: 'even' } });
  // Unknown hash, then the hash with the text.
  assert.equal(sent.length, 2);
  assert.equal(sent[0].query, undefined);
  assert.ok(sent[0].extensions.persistedQuery.sha256Hash);
  assert.ok(sent[1].query.includes('counter'));
  // A new client: the gateway knows the hash now, so it is sent alone, once.
  const second = new ApolloClient({ link, cache: new InMemoryCache() });
  assert.deepEqual(plain((await second.query({ query, fetchPolicy: 'no-cache' })).data), { counter: { parity: 'even' } });
  assert.equal(sent.length, 3);
  assert.equal(sent[2].query, undefined);
});

test('BatchHttpLink: several queries in one request, each its own result', async () => {
  const { BatchHttpLink } = require('@apollo/client/link/batch-http');
  let requests = 0;
  const link = new BatchHttpLink({
    uri: tb.graphql,
    batchMax: 5,
    batchInterval: 20,
    fetch: async (uri, init) => { requests++; return fetch(uri, init); },
  });
  const c = new ApolloClient({ link, cache: new InMemoryCache() });
  const [a, b, bad] = await Promise.all([
    c.query({ query: gql('{ counter { parity } }'), fetchPolicy: 'no-cache' }),
    c.query({ query: gql('query Two { messages(channel: "batch") { text } }'), fetchPolicy: 'no-cache' }),
    c.query({ query: gql('query Bad { counter { nope } }'), fetchPolicy: 'no-cache', errorPolicy: 'all' }),
  ]);
  assert.equal(requests, 1);
  assert.deepEqual(plain(a.data), { counter: { parity: 'even' } });
  assert.deepEqual(plain(b.data), { messages: [] });
  assert.match(JSON.stringify(bad.errors), /nope/);
});

test('an idle multipart subscription gets a heartbeat part {} within 5 s', async () => {
  const res = await fetch(tb.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'multipart/mixed;subscriptionSpec=1.0' },
    body: JSON.stringify({ query: 'subscription { messages(channel: "idle-mp") { text } }' }),
  });
  const reader = res.body.getReader();
  const started = Date.now();
  let text = '';
  while (!text.includes('\r\n\r\n{}\r\n--graphql')) {
    text += new TextDecoder().decode((await reader.read()).value);
  }
  const waited = Date.now() - started;
  assert.ok(waited < 8000, `heartbeat after ${waited} ms`);
  assert.ok(text.startsWith('\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{"payload":{"data":{"messages":[]}}}\r\n--graphql'), text);
  await reader.cancel();
});
