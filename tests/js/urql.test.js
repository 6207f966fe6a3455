// urql 6 as its docs start it: `new Client({ url, exchanges: [cacheExchange, fetchExchange] })`,
// no fetchOptions. Its fetchExchange asks for every query and mutation with
//   Accept: application/graphql-response+json, application/graphql+json, application/json,
//           text/event-stream, multipart/mixed
// and must get one JSON answer back (the first type it lists), not a stream.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Client, cacheExchange, fetchExchange, gql } from '@urql/core';
import { start } from './testbed.js';

// urql's own header for queries and mutations, byte for byte.
const URQL_ACCEPT =
  'application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed';

// Anything that escapes urql (an abort it did not catch, say) fails the test it happened in.
const escaped = [];
const onRejection = (e) => escaped.push(`unhandledRejection: ${e?.stack ?? e}`);
const onException = (e) => escaped.push(`uncaughtException: ${e?.stack ?? e}`);
process.on('unhandledRejection', onRejection);
process.on('uncaughtException', onException);

let tb;
before(async () => { tb = await start(); });
after(async () => {
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onException);
  await tb.stop();
});

afterEach(async () => {
  // Let a late rejection (a fetch aborted after the result came) surface first.
  await new Promise((r) => setTimeout(r, 200));
  const got = escaped.splice(0);
  assert.deepEqual(got, [], 'nothing escapes urql unhandled');
});

const client = () => new Client({ url: tb.graphql, exchanges: [cacheExchange, fetchExchange] });

// urql's cacheExchange adds `__typename` to every selection; the assertions leave it out.
const plain = (d) => JSON.parse(JSON.stringify(d, (k, v) => (k === '__typename' ? undefined : v)));

/** An operation's first result, or a clear failure instead of a hang. */
async function first(source, what, ms = 10000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`urql gave no result for ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([source.toPromise(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

test('a query through urql\'s default client gets its data and no error', async () => {
  const c = client();
  const r = await first(c.query(gql`{ messages(channel: "urql") { id text author { name } } counter { parity } }`, {}), 'the query');
  assert.equal(r.error, undefined, `no error (got ${r.error})`);
  assert.deepEqual(plain(r.data), { messages: [], counter: { parity: 'even' } });
});

test('a mutation through urql\'s default client, then the query that sees it', async () => {
  const c = client();
  const m = await first(
    c.mutation(gql`mutation ($text: String!) { sendMessage(channel: "urql-m", text: $text) { id text author { name } } }`, { text: 'from urql' }),
    'the mutation',
  );
  assert.equal(m.error, undefined, `no error (got ${m.error})`);
  assert.deepEqual(plain(m.data), { sendMessage: { id: '1', text: 'from urql', author: { name: 'user 1' } } });
  const q = await first(
    c.query(gql`{ messages(channel: "urql-m") { id text } }`, {}, { requestPolicy: 'network-only' }),
    'the query after the mutation',
  );
  assert.equal(q.error, undefined, `no error (got ${q.error})`);
  assert.deepEqual(plain(q.data), { messages: [{ id: '1', text: 'from urql' }] });
});

async function raw(query) {
  const res = await fetch(tb.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: URQL_ACCEPT },
    body: JSON.stringify({ query }),
  });
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), text };
}

test('a query with urql\'s Accept header is answered as application/graphql-response+json', async () => {
  const r = await raw('{ counter { parity } }');
  assert.equal(r.status, 200);
  assert.match(r.type ?? '', /^application\/graphql-response\+json\s*(;|$)/, `content-type (body: ${r.text.slice(0, 200)})`);
  assert.deepEqual(JSON.parse(r.text), { data: { counter: { parity: 'even' } } });
});

test('a mutation with urql\'s Accept header is answered as application/graphql-response+json', async () => {
  const r = await raw('mutation { sendMessage(channel: "urql-raw", text: "raw") { id text } }');
  assert.equal(r.status, 200);
  assert.match(r.type ?? '', /^application\/graphql-response\+json\s*(;|$)/, `content-type (body: ${r.text.slice(0, 200)})`);
  assert.deepEqual(JSON.parse(r.text), { data: { sendMessage: { id: '1', text: 'raw' } } });
});
