/**
 * `hashmail pipe`: netcat for a mailbox. Acts as a party that reads `sid` and
 * writes `sid ^ 1`, so two pipes on a SID pair talk to each other, and a pipe
 * can stand in for either side of an LNC connection in tests. v2 and the
 * WebSocket transport go through the client library (src/client);
 * `--protocol v1` over gRPC keeps the direct legacy client, which half-closes
 * its send stream at the end of stdin as litd does.
 */
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import type { Readable, Writable } from 'node:stream';
import {
  errorText,
  LegacyHashMailClient,
  MAX_MESSAGE_BYTES,
  type LegacyReceiveStream,
  type LegacySendStream,
  type TransportSecurity,
} from '../client/legacy-grpc.js';
import { peerSid, SID_BYTES } from '../session/sid.js';
import { connect, type MailboxConnection, type ProtocolChoice, type TransportName } from '../client/index.js';

/** --raw: one message per stdin chunk, split at this size. */
export const RAW_CHUNK_BYTES = 64 * 1024;
/** A line longer than a message can be is refused instead of buffered without bound. */
export const MAX_LINE_BYTES = MAX_MESSAGE_BYTES;
/** After the receive stream ends: how long a half-closed send may take to report its status. */
const SEND_STATUS_WAIT_MS = 2_000;
/** Bound on flushing stdout before returning, so a stuck reader cannot hold the exit. */
const STDOUT_FLUSH_WAIT_MS = 5_000;

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

const NEWLINE = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);

export const PIPE_USAGE = `Usage: hashmail pipe --server HOST:PORT[,HOST:PORT...] [--insecure|--tls-skip-verify] --sid HEX128
                     [--create] [--raw] [--protocol auto|v2|v1] [--transport grpc|websocket]

Netcat for a mailbox. Acts as a party that reads SID and writes SID^1 (bit 0
of byte 63 flipped): two pipes, one on SID and one on SID^1, talk to each
other.

stdin -> messages: one message per line (the newline is not part of the
message; a last line without a newline is still a message). At end of stdin
the pipe stops sending (v1: half-closes its send stream) and receiving goes on.
received messages -> stdout: one line per message (message bytes + newline).

Options:
  --server HOST:PORT   mailbox server to connect to (IPv6: [ADDR]:PORT). Required.
                       Any instance of a cluster: with v2 the pipe looks up
                       the relay that owns the session there and dials it
                       (a single server answers with itself; an older one is
                       dialed directly). Several instances, comma-separated,
                       are asked in order (v1 over gRPC uses the first).
  --insecure           plain text (h2c / ws://), no TLS.
  --tls-skip-verify    TLS without verifying the server certificate or name
                       (self-signed servers). Default without either flag:
                       TLS verified against the system roots.
  --sid HEX128         the stream ID to read, 128 hex characters (64 bytes).
                       Required. The pipe writes to SID^1.
  --create             v2: create the session if it does not exist
                       (ATTACH_CREATE); without it the session must exist.
                       v1: first create both boxes (SID and SID^1) with
                       NewCipherBox, as the node side does; a box that
                       already exists is fine.
  --protocol P         auto (default): v2, falling back to v1 on a server
                       without v2; v2: v2 only; v1: the legacy half streams.
  --transport T        grpc (default) or websocket (/v2/mailbox, or the
                       legacy /v1/.../receive and /send sockets).
  --raw                binary mode: each chunk read from stdin (at most
                       ${RAW_CHUNK_BYTES} bytes) is one message, and received
                       messages are written to stdout with no separator.
  -h, --help           show this help and exit.

With v2 the pipe waits for its peer instead of failing when the peer is not
there yet (messages are held by the relay up to its window), and prints
presence changes to stderr: "hashmail pipe: peer present" / "hashmail pipe:
peer absent". v1 cannot tell presence. A v2 message is at most the server's
v2.maxMessageBytes (default 64 KiB).

Exit status: 0 when the receive stream ends normally or on SIGINT/SIGTERM;
1 when the connection fails (the server's message is printed, e.g.
"hashmail pipe: stream not found"); 2 on a usage error. The pipe does not
reconnect.
`;

/** The process streams, injectable so the pipe can run in-process. */
export interface PipeIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

interface PipeOptions {
  /** The instances of --server, in order. */
  addresses: string[];
  security: TransportSecurity;
  sid: Buffer;
  create: boolean;
  raw: boolean;
  protocol: ProtocolChoice;
  transport: TransportName;
}

const PROTOCOLS: readonly ProtocolChoice[] = ['auto', 'v2', 'v1'];
const TRANSPORTS: readonly TransportName[] = ['grpc', 'websocket'];

class UsageError extends Error {}

export async function runPipe(argv: string[], io: PipeIo = processIo()): Promise<number> {
  let options: PipeOptions | 'help';
  try {
    options = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError) && !isParseArgsError(err)) throw err;
    io.stderr.write(`hashmail pipe: ${(err as Error).message}\nTry 'hashmail pipe --help'.\n`);
    return EXIT_USAGE;
  }
  if (options === 'help') {
    io.stdout.write(PIPE_USAGE);
    return EXIT_OK;
  }
  return pipe(options, io);
}

function processIo(): PipeIo {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
}

function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

function parseOptions(argv: string[]): PipeOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      server: { type: 'string' },
      insecure: { type: 'boolean' },
      'tls-skip-verify': { type: 'boolean' },
      sid: { type: 'string' },
      create: { type: 'boolean' },
      raw: { type: 'boolean' },
      protocol: { type: 'string' },
      transport: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (values.server === undefined) throw new UsageError('--server HOST:PORT is required');
  if (values.sid === undefined) throw new UsageError('--sid is required');
  if (values.insecure && values['tls-skip-verify']) {
    throw new UsageError('--insecure and --tls-skip-verify exclude each other');
  }
  return {
    addresses: values.server.split(',').map((s) => parseAddress(s.trim())),
    security: values.insecure ? 'insecure' : values['tls-skip-verify'] ? 'tls-skip-verify' : 'tls',
    sid: parseSid(values.sid),
    create: values.create === true,
    raw: values.raw === true,
    protocol: parseChoice(values.protocol, PROTOCOLS, '--protocol', 'auto'),
    transport: parseChoice(values.transport, TRANSPORTS, '--transport', 'grpc'),
  };
}

function parseChoice<T extends string>(value: string | undefined, allowed: readonly T[], flag: string, fallback: T): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got '${value}'`);
  return value as T;
}

const SID_HEX = new RegExp(`^[0-9a-fA-F]{${SID_BYTES * 2}}$`);

function parseSid(hex: string): Buffer {
  // Never echo the value: a SID is a bearer capability.
  if (!SID_HEX.test(hex)) {
    throw new UsageError(`--sid must be ${SID_BYTES * 2} hex characters (${SID_BYTES} bytes); got ${hex.length} characters`);
  }
  return Buffer.from(hex, 'hex');
}

function parseAddress(server: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(server);
  const port = match ? Number(match[2]) : 0;
  if (!match || port < 1 || port > 65535) {
    throw new UsageError(`--server must be HOST:PORT (IPv6: [ADDR]:PORT), got '${server}'`);
  }
  return server;
}

type Outcome = { kind: 'ended' } | { kind: 'signal' } | { kind: 'failed'; err: unknown };

function pipe(options: PipeOptions, io: PipeIo): Promise<number> {
  return options.protocol === 'v1' && options.transport === 'grpc' ? pipeLegacy(options, io) : pipeLibrary(options, io);
}

/** The process's signals and stdout failures as the pipe's outcome; the first outcome wins, later ones are its consequences. */
function outcomes(io: PipeIo): { finished: Promise<Outcome>; finish(outcome: Outcome): void; dispose(): void } {
  let finish: (outcome: Outcome) => void = () => undefined;
  const finished = new Promise<Outcome>((resolve) => {
    finish = resolve;
  });
  const onSignal = (): void => finish({ kind: 'signal' });
  const onStdoutError = (err: Error): void => finish({ kind: 'failed', err });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  io.stdout.on('error', onStdoutError);
  return {
    finished,
    finish: (outcome) => finish(outcome),
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      io.stdout.off('error', onStdoutError);
    },
  };
}

/** v2 (or v1 over WebSocket) through the client library, without reconnecting. */
async function pipeLibrary(options: PipeOptions, io: PipeIo): Promise<number> {
  const run = outcomes(io);
  const abort = new AbortController();
  let conn: MailboxConnection | null = null;
  let stdinDone = false;
  try {
    const connecting = connect({
      server: options.addresses,
      insecure: options.security === 'insecure',
      tlsSkipVerify: options.security === 'tls-skip-verify',
      sid: options.sid,
      // --create: the node side, which creates (v1 boxes, v2 ATTACH_CREATE); otherwise the session must exist.
      role: options.create ? 'node' : 'app',
      attach: options.create ? 'create' : 'existing',
      protocol: options.protocol,
      transport: options.transport,
      reconnect: false,
      signal: abort.signal,
    }).then(
      (c) => c,
      (err: unknown) => ({ kind: 'failed', err }) as const,
    );
    const first = await Promise.race([connecting, run.finished]);
    if (!('send' in first)) {
      abort.abort();
      void connecting.then((c) => ('send' in c ? c.close() : undefined));
      return report(first, io);
    }
    const connection = first;
    conn = connection;
    const notePresence = (present: boolean): void => {
      io.stderr.write(`hashmail pipe: peer ${present ? 'present' : 'absent'}\n`);
    };
    if (connection.peerPresent) notePresence(true);
    connection.on('presence', notePresence);

    pumpOut(connection, io.stdout, options.raw).then(
      () => run.finish({ kind: 'ended' }),
      (err: unknown) => run.finish({ kind: 'failed', err }),
    );
    const pumpIn = options.raw ? pumpRaw : pumpLines;
    pumpIn(io.stdin, (msg) => connection.send(msg)).then(
      () => {
        stdinDone = true;
      },
      (err: unknown) => run.finish({ kind: 'failed', err }),
    );
    return report(await run.finished, io);
  } finally {
    if (!stdinDone) io.stdin.destroy();
    await conn?.close();
    await flush(io.stdout);
    run.dispose();
  }
}

async function pipeLegacy(options: PipeOptions, io: PipeIo): Promise<number> {
  const client = new LegacyHashMailClient({ address: options.addresses[0], security: options.security });
  const run = outcomes(io);
  const { finished, finish } = run;

  let receive: LegacyReceiveStream | null = null;
  let send: LegacySendStream | null = null;
  let stdinDone = false;
  try {
    if (options.create) {
      const created = client.createBoxes(options.sid).then(
        () => null,
        (err: unknown) => ({ kind: 'failed', err }) as const,
      );
      const early = await Promise.race([created, finished]);
      if (early) return report(early, io);
    }

    receive = client.openReceive(options.sid);
    // The send stream opens on the first message, as litd's does: a pipe that only listens never takes the write slot.
    const openSend = (): LegacySendStream => {
      if (send) return send;
      const opened = client.openSend(peerSid(options.sid));
      opened.done.then(
        () => {
          if (!opened.isHalfClosed) finish({ kind: 'failed', err: new Error('send stream ended by the server') });
        },
        (err: unknown) => finish({ kind: 'failed', err }),
      );
      send = opened;
      return opened;
    };

    pumpOut(receive, io.stdout, options.raw).then(
      () => finish({ kind: 'ended' }),
      (err: unknown) => finish({ kind: 'failed', err }),
    );
    const pumpIn = options.raw ? pumpRaw : pumpLines;
    pumpIn(io.stdin, (msg) => openSend().write(msg)).then(
      () => {
        stdinDone = true;
        send?.end();
      },
      (err: unknown) => finish({ kind: 'failed', err }),
    );

    let outcome = await finished;
    const sending = send as LegacySendStream | null;
    if (outcome.kind === 'ended' && sending?.isHalfClosed) {
      // Let messages already queued behind a half-close reach the server before exiting.
      const status = await withTimeout(sending.done.then(() => null, (err: unknown) => err), SEND_STATUS_WAIT_MS);
      if (status) outcome = { kind: 'failed', err: status };
    }
    return report(outcome, io);
  } finally {
    receive?.cancel();
    (send as LegacySendStream | null)?.cancel();
    if (!stdinDone) io.stdin.destroy();
    client.close();
    await flush(io.stdout);
    run.dispose();
  }
}

function report(outcome: Outcome, io: PipeIo): number {
  if (outcome.kind !== 'failed') return EXIT_OK;
  io.stderr.write(`hashmail pipe: ${errorText(outcome.err)}\n`);
  return EXIT_FAILURE;
}

/** Received messages to stdout, waiting for stdout to drain so a slow reader slows the server. */
async function pumpOut(receive: AsyncIterable<Uint8Array>, stdout: Writable, raw: boolean): Promise<void> {
  for await (const msg of receive) {
    const out = raw ? msg : Buffer.concat([msg, NEWLINE], msg.length + 1);
    if (out.length > 0 && !stdout.write(out)) await once(stdout, 'drain');
  }
}

/** Sends one message; resolves once the transport accepted it. */
type Write = (msg: Buffer) => Promise<void>;

/** stdin to messages, one per line; a last line without newline is a message too. */
async function pumpLines(stdin: Readable, write: Write): Promise<void> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of stdin as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      let line = chunk.subarray(start, nl);
      if (pendingBytes > 0) {
        pending.push(line);
        line = Buffer.concat(pending, pendingBytes + line.length);
        pending = [];
        pendingBytes = 0;
      }
      checkLineLength(line.length);
      await write(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      checkLineLength(pendingBytes);
    }
  }
  if (pendingBytes > 0) await write(Buffer.concat(pending, pendingBytes));
}

function checkLineLength(bytes: number): void {
  if (bytes > MAX_LINE_BYTES) throw new Error(`line longer than ${MAX_LINE_BYTES} bytes (use --raw for binary data)`);
}

/** stdin to messages, one per chunk read (split at RAW_CHUNK_BYTES). */
async function pumpRaw(stdin: Readable, write: Write): Promise<void> {
  for await (const chunk of stdin as AsyncIterable<Buffer>) {
    for (let start = 0; start < chunk.length; start += RAW_CHUNK_BYTES) {
      await write(chunk.subarray(start, start + RAW_CHUNK_BYTES));
    }
  }
}

/** Resolves once everything written to `out` so far is handed to the OS (or `out` failed), bounded. */
async function flush(out: Writable): Promise<void> {
  if (out.destroyed || out.writableEnded) return;
  await withTimeout(new Promise<void>((resolve) => out.write(EMPTY, () => resolve())), STDOUT_FLUSH_WAIT_MS);
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
