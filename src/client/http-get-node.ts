/**
 * Node-only: the HTTP lookup's GET (and the legacy REST NewCipherBox's POST)
 * over node:http / node:https, which (unlike fetch in Node 20) can skip
 * certificate verification for self-signed test relays, or trust `ca` / a pin. The Node entry (index.ts) loads it with a dynamic import; the
 * browser entry never does and uses fetch.
 */
import http from 'node:http';
import https from 'node:https';
import type { HttpRequest } from './relay-lookup.js';

/** A lookup answer is a few hundred bytes; anything longer is not ours. */
const MAX_BODY_BYTES = 16 * 1024;
/**
 * Keep-alive agents for lookups with the default trust, shared by every
 * connection of this process: a relay's death makes all of its parties look
 * up at once, and a new connection (TCP, maybe TLS) per lookup per retry
 * costs more CPU than the lookup. No cap on sockets: a lookup never queues
 * behind others (under a storm a queue of 16 sockets grew to 7 s); idle ones
 * are reused, at most IDLE_LOOKUP_SOCKETS kept per instance. A pinned `tls`
 * gets a connection of its own: its check is not part of an agent's key.
 */
const IDLE_LOOKUP_SOCKETS = 64;
/**
 * An idle kept-alive socket is closed by us after this (ms), before a relay
 * closes it (http.idleTimeoutMs, 60 s by default): a lookup written into a
 * socket the relay is closing at that moment fails with "socket hang up".
 */
const IDLE_LOOKUP_SOCKET_MS = 30_000;
const agents = {
  http: new http.Agent({ keepAlive: true, maxFreeSockets: IDLE_LOOKUP_SOCKETS, timeout: IDLE_LOOKUP_SOCKET_MS }),
  https: new https.Agent({ keepAlive: true, maxFreeSockets: IDLE_LOOKUP_SOCKETS, timeout: IDLE_LOOKUP_SOCKET_MS }),
};

/**
 * A lookup on a reused socket that failed before any answer: the relay
 * closed the socket as we wrote to it (its idle deadline, a restart). The
 * request never reached a handler, and a lookup is safe to repeat, so it is
 * sent once more on a fresh connection.
 */
function isStaleSocket(req: http.ClientRequest, err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

export function nodeHttpRequest(options: { tlsSkipVerify: boolean }): HttpRequest {
  return (url, { signal, timeoutMs, tls, post }) =>
    new Promise((resolve, reject) => {
      const secure = url.startsWith('https:');
      const request = secure ? https.request : http.request;
      const method = post ? { method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(post.body) } } : {};
      const send = (agent: http.Agent | false): void => {
        let answered = false;
        const req = request(url, { ...method, signal, timeout: timeoutMs, agent, ...(secure ? { rejectUnauthorized: !options.tlsSkipVerify, ...tls } : {}) }, (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          let length = 0;
          res.on('data', (chunk: Buffer) => {
            length += chunk.length;
            if (length <= MAX_BODY_BYTES) chunks.push(chunk);
            else res.destroy(new Error('lookup answer too long'));
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.on('error', (err) => {
          if (!answered && agent !== false && !signal?.aborted && isStaleSocket(req, err)) send(false);
          else reject(err);
        });
        req.end(post?.body);
      };
      send(tls ? false : secure ? agents.https : agents.http);
    });
}
