// The reference server of `scripts/memory`: graphql-js + graphql-ws over `ws` on Node
// (WebSocket on /graphql) and graphql-sse (SSE on /graphql/stream), the demo's shape —
// `messageAdded(channel)` events fed by the `sendMessage` mutation.
// Usage: node reference-server.mjs PORT
import { createRequire } from 'node:module';
import http from 'node:http';
const require = createRequire(new URL('../../../tests/js/package.json', import.meta.url));
const { buildSchema, execute, subscribe: subscribeTo } = require('graphql');
const { useServer } = require('graphql-ws/lib/use/ws');
const { createHandler } = require('graphql-sse/lib/use/http');
const { WebSocketServer } = require('ws');

const schema = buildSchema(`
  type Message { id: ID! channel: String! text: String! }
  type Query { messages(channel: String!): [Message!]! }
  type Mutation { sendMessage(channel: String!, text: String!): Message }
  type Subscription { messageAdded(channel: String!): Message }
`);

const messages = [];
const listeners = new Set();

// An async iterator of the messages of one channel, for one subscriber.
function subscribe(channel) {
  const queue = [];
  let wake = null;
  const listener = (m) => {
    if (m.channel !== channel) return;
    if (wake) { const w = wake; wake = null; w({ value: { messageAdded: m }, done: false }); }
    else queue.push(m);
  };
  listeners.add(listener);
  return {
    [Symbol.asyncIterator]() { return this; },
    next() {
      if (queue.length) return Promise.resolve({ value: { messageAdded: queue.shift() }, done: false });
      return new Promise((resolve) => { wake = resolve; });
    },
    return() { listeners.delete(listener); return Promise.resolve({ value: undefined, done: true }); },
  };
}

const roots = {
  messages: ({ channel }) => messages.filter((m) => m.channel === channel),
  sendMessage: ({ channel, text }) => {
    const m = { id: String(messages.length + 1), channel, text };
    messages.push(m);
    for (const l of listeners) l(m);
    return m;
  },
  messageAdded: ({ channel }) => subscribe(channel),
};

const port = +process.argv[2] || 4100;
const sse = createHandler({
  schema,
  execute: (args) => execute({ ...args, rootValue: roots }),
  subscribe: (args) => subscribeTo({ ...args, rootValue: roots }),
});
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/graphql/stream')) return sse(req, res);
  res.writeHead(404).end();
});
const sockets = new WebSocketServer({ server, path: '/graphql' });
useServer({
  schema,
  roots: { query: roots, mutation: roots, subscription: roots },
}, sockets);
server.listen(port, '127.0.0.1', () => console.log(`reference server on ${port}`));
