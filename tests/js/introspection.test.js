// Introspection answered by livegate's own executor equals graphql-js's
// introspectionFromSchema(buildSchema(sdl)) for every type the SDL declares (and for the
// built-in scalars, the introspection types and the specified directives), on the demo
// schema and on one that uses every kind of type, description, default and deprecation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema, introspectionFromSchema, getIntrospectionQuery } from 'graphql';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.LIVEGATE_BIN ?? path.join(root, 'target/debug/livegate');

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function gateway(sdl) {
  const dir = mkdtempSync(path.join(tmpdir(), 'livegate-introspection-'));
  const file = path.join(dir, 'schema.graphql');
  writeFileSync(file, sdl);
  const port = await freePort();
  const child = spawn(bin, ['--schema', file, '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {}
    if (child.exitCode !== null || i > 200) throw new Error(`livegate did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    async query(query, variables) {
      const r = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      });
      return r.json();
    },
    stop() {
      child.kill('SIGKILL');
    },
  };
}

const FULL = getIntrospectionQuery({
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
});

const LIVEGATE_DIRECTIVES = new Set([
  'upstream', 'rest', 'cache', 'invalidates', 'live', 'updates', 'stream', 'map', 'discriminate',
]);

async function compare(sdl) {
  // livegate's directives are unknown to graphql-js: built without SDL validation they
  // are ignored, as the comparison wants.
  const expected = JSON.parse(JSON.stringify(introspectionFromSchema(buildSchema(sdl, { assumeValidSDL: true })).__schema));
  const gw = await gateway(sdl);
  try {
    const got = await gw.query(FULL);
    assert.equal(got.errors, undefined, JSON.stringify(got.errors));
    const schema = got.data.__schema;
    assert.equal(schema.description, expected.description);
    assert.deepEqual(schema.queryType, expected.queryType);
    assert.deepEqual(schema.mutationType, expected.mutationType);
    assert.deepEqual(schema.subscriptionType, expected.subscriptionType);
    const byName = new Map(schema.types.map((t) => [t.name, t]));
    assert.deepEqual([...byName.keys()], expected.types.map((t) => t.name), 'the same types, in the same order');
    for (const t of expected.types) assert.deepEqual(byName.get(t.name), t, `type ${t.name}`);
    const directives = expected.directives.filter((d) => !LIVEGATE_DIRECTIVES.has(d.name));
    assert.deepEqual(schema.directives, directives);
    // __type(name:) answers the same type; deprecated fields only when asked.
    for (const t of expected.types.filter((t) => t.fields)) {
      const one = await gw.query(
        'query($n: String!) { __type(name: $n) { name fields { name isDeprecated } all: fields(includeDeprecated: true) { name } } }',
        { n: t.name },
      );
      assert.deepEqual(one.data.__type.all.map((f) => f.name), t.fields.map((f) => f.name));
      assert.deepEqual(
        one.data.__type.fields.map((f) => f.name),
        t.fields.filter((f) => !f.isDeprecated).map((f) => f.name),
      );
    }
    const none = await gw.query('{ __type(name: "Nope") { name } }');
    assert.deepEqual(none, { data: { __type: null } });
    return gw;
  } catch (e) {
    gw.stop();
    throw e;
  }
}

test('introspection of the demo schema equals graphql-js', async () => {
  const gw = await compare(readFileSync(path.join(root, 'schema.graphql'), 'utf8'));
  gw.stop();
});

const EVERY_KIND = `
schema @upstream(name: "api", url: "http://127.0.0.1:1") { query: Query mutation: Mutation }

"""
The root, described
"""
type Query {
  "All posts"
  posts(
    "how many" first: Int = 10
    tag: String = "a\\"b\\\\c\\n"
    order: Order = NEWEST
    filter: Filter = {q: "x"}
    ids: [ID] = 1
    exact: [Float!] = [1.0, 2.5]
    name: ID = "007"
  ): [Post!]! @rest(upstream: "api", path: "/posts")
  node(id: ID!): Node @rest(upstream: "api", path: "/nodes/{args.id}")
  thing: Thing @rest(upstream: "api", path: "/thing")
  old: String @rest(upstream: "api", path: "/old") @deprecated
  older: Int @rest(upstream: "api", path: "/older") @deprecated(reason: "gone")
  when: Date @rest(upstream: "api", path: "/when")
}
type Mutation {
  make(input: Filter!): Post @rest(upstream: "api", method: POST, path: "/posts", body: "{args.input}")
}
"A node"
interface Node @discriminate(field: "type") { id: ID! }
type Post implements Node { id: ID! title: String score: Float tags: [[String!]]! }
type User implements Node { id: ID! name: String }
"Order of things"
enum Order {
  "newest first"
  NEWEST
  OLDEST
}
input Filter { q: String, limit: Int = 5, flag: Boolean, nested: Inner = {depth: 2} }
input Inner { depth: Int, order: Order = OLDEST }
union Thing @discriminate(field: "type") = User | Post
"a date"
scalar Date
`;

test('introspection of every kind of type equals graphql-js', async () => {
  const gw = await compare(EVERY_KIND);
  try {
    // Deep type references, fragments and aliases on the introspection types.
    const r = await gw.query(`{
      __schema { queryType { name kind fields { name } } }
      t: __type(name: "Post") { ...T }
    }
    fragment T on __Type { name fields { name type { kind ofType { kind ofType { kind ofType { kind ofType { name kind fields { name } } } } } } } }`);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.__schema.queryType.fields[0].name, 'posts');
    const tags = r.data.t.fields.find((f) => f.name === 'tags');
    assert.deepEqual(tags.type, {
      kind: 'NON_NULL',
      ofType: { kind: 'LIST', ofType: { kind: 'LIST', ofType: { kind: 'NON_NULL', ofType: { name: 'String', kind: 'SCALAR', fields: null } } } },
    });
  } finally {
    gw.stop();
  }
});
