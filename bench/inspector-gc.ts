/**
 * A full garbage collection in a relay started with Node's inspector
 * (startHashmail's `inspect`): RSS read right after a burst includes
 * buffers that are garbage but not yet collected, so whether a GC happened
 * to run decides the figure. After this it is what is still referenced.
 */
import WebSocket from 'ws';
import type { RelayProcess } from './server-process.js';
import { sleep, withTimeout } from './stats.js';

const URL_WAIT_MS = 5_000;
const URL_POLL_MS = 50;
const GC_REQUEST_ID = 1;

interface InspectorReply {
  id?: number;
  error?: { message: string };
}

async function inspectorUrl(relay: RelayProcess): Promise<string> {
  const deadline = Date.now() + URL_WAIT_MS;
  for (;;) {
    const url = relay.inspectorUrl?.() ?? null;
    if (url) return url;
    if (Date.now() > deadline) throw new Error('relay has no inspector (start it with inspect: true)');
    await sleep(URL_POLL_MS);
  }
}

/** HeapProfiler.collectGarbage over the inspector protocol; resolves once the collection is done. */
export async function collectGarbage(relay: RelayProcess, timeoutMs: number): Promise<void> {
  const ws = new WebSocket(await inspectorUrl(relay));
  ws.on('error', () => undefined);
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      }),
      timeoutMs,
      'inspector connection',
    );
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        ws.on('message', (data) => {
          const reply = JSON.parse((data as Buffer).toString('utf8')) as InspectorReply;
          if (reply.id !== GC_REQUEST_ID) return;
          if (reply.error) reject(new Error(`collectGarbage: ${reply.error.message}`));
          else resolve();
        });
        ws.send(JSON.stringify({ id: GC_REQUEST_ID, method: 'HeapProfiler.collectGarbage' }));
      }),
      timeoutMs,
      'collectGarbage',
    );
  } finally {
    ws.terminate();
  }
}
