/* global process, console, TextEncoder, TextDecoder */
// Copied into the temporary app of test/integration/client-package.test.ts and
// run there with plain `node`, so `hashmail-client` resolves to the installed
// package, never to this repository. Two parties of one session (a v2
// connection phrase naming the relay): the app over gRPC, the node over
// WebSocket (Node 20 has no global WebSocket: the `ws` dependency). Each sends
// one message; the result is one JSON line on stdout.
import { connect, encodeConnectionPhrase, newPhraseEntropy } from 'hashmail-client';

const [address] = process.argv.slice(2);
const text = (bytes) => new TextDecoder().decode(bytes);

// next() and not `for await`: leaving a for-await loop closes the connection, and the peer's send may still be in flight.
async function firstMessage(conn) {
  const r = await conn[Symbol.asyncIterator]().next();
  if (r.done) throw new Error('the connection ended before a message');
  return text(r.value);
}

const phrase = await encodeConnectionPhrase({ entropy: newPhraseEntropy(), mailboxes: [address] });
const app = await connect({ phrase, insecure: true, role: 'app', transport: 'grpc' });
const node = await connect({ phrase, insecure: true, role: 'node', transport: 'websocket' });
try {
  const [toNode, toApp] = await Promise.all([firstMessage(node), firstMessage(app), app.send(new TextEncoder().encode('hello node')), node.send(new TextEncoder().encode('hello app'))]);
  console.log(JSON.stringify({ resolved: import.meta.resolve('hashmail-client'), versions: [app.version, node.version], toNode, toApp }));
} finally {
  await Promise.all([app.close(), node.close()]);
}
