/**
 * The attacker's side of the JSON storm, in a process of its own so that
 * building and masking megabytes of JSON does not delay the measuring
 * client: S legacy WebSocket send sockets, each sending one large JSON
 * object with many unknown keys, waiting for the server's answer (an error
 * frame, or the socket's end), then dialling again; until the time is up or
 * each socket sent its bounded count.
 *
 * IPC: sends {op:'ready', bytes} once the payload is built; takes
 * {op:'go', ...StormCommand}; answers {op:'done', ...StormTally}.
 */
import WebSocket from 'ws';
import { openWebSocket } from './ws-party.js';
import { SEND_PATH } from './wire.js';

export interface StormCommand {
  port: number;
  sockets: number;
  keys: number;
  maxPerSocket: number;
  durationMs: number;
  /** One send's answer (or the socket's close) not in within this ends that socket's loop. */
  answerTimeoutMs: number;
}

export interface StormTally {
  sent: number;
  /** Sends the server answered with a frame. */
  answered: number;
  /** Sends after which the server closed the socket without a frame. */
  closedSilently: number;
  unanswered: number;
  errors: string[];
  /** The server's first answer, cut short. */
  firstAnswer: string | null;
}

type StormMessage = { op: 'go' } & StormCommand;

/** Shown of the server's answer; it quotes the client's key, which is short here. */
const ANSWER_SHOWN_CHARS = 120;
const MAX_ERRORS_KEPT = 5;
/** Key i is `k` plus i in 6 digits: 12 bytes a pair with its value and comma. */
const KEY_DIGITS = 6;

/** `{"k000000":0,"k000001":0,...}`: every key unknown to a CipherBox. */
export function stormPayload(keys: number): Buffer {
  const parts: string[] = new Array<string>(keys);
  for (let i = 0; i < keys; i++) parts[i] = `"k${String(i).padStart(KEY_DIGITS, '0')}":0`;
  return Buffer.from(`{${parts.join(',')}}`);
}

/** Resolves with the first frame's text, null if the socket closed first, 'timeout' after `timeoutMs`. */
function answerOf(ws: WebSocket, timeoutMs: number): Promise<string | null | 'timeout'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve((data as Buffer).toString('utf8'));
    });
    ws.once('close', () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
}

async function stormSocket(c: StormCommand, payload: Buffer, end: number, tally: StormTally): Promise<void> {
  for (let i = 0; i < c.maxPerSocket && Date.now() < end; i++) {
    let ws: WebSocket;
    try {
      ws = await openWebSocket(c.port, SEND_PATH, c.answerTimeoutMs);
    } catch (err) {
      if (tally.errors.length < MAX_ERRORS_KEPT) tally.errors.push((err as Error).message);
      return;
    }
    ws.on('error', () => undefined);
    const answer = answerOf(ws, c.answerTimeoutMs);
    // Text, as the browser client sends its JSON.
    ws.send(payload, { binary: false });
    tally.sent++;
    const a = await answer;
    ws.terminate();
    if (a === 'timeout') {
      tally.unanswered++;
      return;
    }
    if (a === null) tally.closedSilently++;
    else {
      tally.answered++;
      tally.firstAnswer ??= a.slice(0, ANSWER_SHOWN_CHARS);
    }
  }
}

if (process.send) {
  let payload: Buffer | null = null;
  process.on('message', (m: StormMessage) => {
    if (m.op !== 'go') return;
    const tally: StormTally = { sent: 0, answered: 0, closedSilently: 0, unanswered: 0, errors: [], firstAnswer: null };
    payload ??= stormPayload(m.keys);
    const end = Date.now() + m.durationMs;
    void Promise.all(Array.from({ length: m.sockets }, () => stormSocket(m, payload!, end, tally))).then(() => process.send!({ op: 'done', ...tally }));
  });
  // Ends with the parent, whatever happens to it.
  process.on('disconnect', () => process.exit(0));
  const keys = Number(process.argv[2]);
  payload = stormPayload(keys);
  process.send({ op: 'ready', bytes: payload.length });
}
