/**
 * `hashmail pipe` as a user runs it: real `hashmail serve`, real pipe
 * processes, bytes through stdin and stdout. Every wait is an awaited process
 * event bounded by STEP_TIMEOUT_MS; every child is killed in `after`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { errorText, LegacyHashMailClient, type TransportSecurity } from '../../src/client/legacy-grpc.js';
import { peerSid, SID_BYTES } from '../../src/session/sid.js';
import { BIN, ROOT, startServer, type RunningServer } from '../helpers/server.js';

/** Upper bound for any single awaited event. */
const STEP_TIMEOUT_MS = 10_000;
/** Interval between probes while the --create pipe has not created its boxes yet (as LNC clients retry). */
const PROBE_RETRY_MS = 50;

const children = new Set<ChildProcessWithoutNullStreams>();
const servers: RunningServer[] = [];

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(servers.map((s) => s.stop()));
});

/** One `hashmail pipe` child, with its output collected and waitable. */
class PipeProcess {
  readonly child: ChildProcessWithoutNullStreams;
  stdout = Buffer.alloc(0);
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [BIN, 'pipe', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this.child);
    this.child.stdout.on('data', (d: Buffer) => {
      this.stdout = Buffer.concat([this.stdout, d]);
    });
    this.child.stderr.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    // A pipe that exits early closes its stdin; the test sees that through the exit code, not an EPIPE crash.
    this.child.stdin.on('error', () => undefined);
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code) => {
        children.delete(this.child);
        resolve(code);
      }),
    );
  }

  write(data: string | Buffer): void {
    this.child.stdin.write(data);
  }

  endInput(): void {
    this.child.stdin.end();
  }

  /** Resolves once stdout satisfies `done`; fails on exit or after STEP_TIMEOUT_MS. */
  waitForStdout(done: (out: Buffer) => boolean, what: string): Promise<void> {
    if (done(this.stdout)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}; stdout: ${JSON.stringify(this.stdout.toString())}; stderr: ${this.stderr}`)), STEP_TIMEOUT_MS);
      const onData = (): void => {
        if (done(this.stdout)) finish();
      };
      const onExit = (code: number | null): void => finish(new Error(`pipe exited (${code}) before ${what}; stderr: ${this.stderr}`));
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.child.stdout.off('data', onData);
        this.child.off('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      // Registered after the collecting listener, so `this.stdout` already holds the chunk.
      this.child.stdout.on('data', onData);
      this.child.once('exit', onExit);
    });
  }

  /** The exit code; fails if the process is still running after STEP_TIMEOUT_MS. */
  async exitCode(): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`pipe did not exit; stderr: ${this.stderr}`)), STEP_TIMEOUT_MS);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

const PRESENCE_LINE = /^hashmail pipe: peer (present|absent)$/;

/** stderr of a pipe that did not fail: nothing but v2 presence lines. */
function assertOnlyPresence(stderr: string, who: string): void {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  for (const line of lines) assert.match(line, PRESENCE_LINE, `${who}: unexpected stderr`);
}

/** Resolves once the pipe printed `line` to stderr; fails on exit or after STEP_TIMEOUT_MS. */
function waitForStderr(pipe: PipeProcess, line: string): Promise<void> {
  const done = (): boolean => pipe.stderr.split('\n').includes(line);
  if (done()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`timed out waiting for stderr "${line}"; stderr: ${pipe.stderr}`)), STEP_TIMEOUT_MS);
    const onData = (): void => {
      if (done()) finish();
    };
    const onExit = (code: number | null): void => finish(new Error(`pipe exited (${code}) before "${line}"; stderr: ${pipe.stderr}`));
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      pipe.child.stderr.off('data', onData);
      pipe.child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    };
    pipe.child.stderr.on('data', onData);
    pipe.child.once('exit', onExit);
  });
}

function pipeArgs(server: RunningServer, sid: Buffer, ...extra: string[]): string[] {
  return ['--server', server.address, '--insecure', '--sid', sid.toString('hex'), ...extra];
}

function randomSid(): Buffer {
  return randomBytes(SID_BYTES);
}

/**
 * Waits until `reader` (a pipe started with --create on `sid`) is reading:
 * writes `probe` to `sid` until the box exists, then waits for the pipe to
 * print it. The pipe opens its receive stream only after creating both boxes,
 * so once it prints, a peer pipe without --create can start.
 */
async function waitUntilReading(address: string, security: TransportSecurity, sid: Buffer, reader: PipeProcess, probe: string): Promise<void> {
  const client = new LegacyHashMailClient({ address, security });
  try {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    for (;;) {
      const send = client.openSend(sid);
      await send.write(Buffer.from(probe));
      send.end();
      try {
        await send.done;
        break;
      } catch (err) {
        if (!errorText(err).includes('stream not found') || Date.now() > deadline) throw err;
        if (reader.child.exitCode !== null) throw new Error(`pipe exited early: ${reader.stderr}`, { cause: err });
        await delay(PROBE_RETRY_MS);
      }
    }
    await reader.waitForStdout((out) => out.includes(probe), 'the probe message');
  } finally {
    client.close();
  }
}

describe('hashmail pipe: command line', () => {
  test('--help exits 0 and documents every flag', async () => {
    const pipe = new PipeProcess(['--help']);
    assert.equal(await pipe.exitCode(), 0);
    const help = pipe.stdout.toString();
    for (const flag of ['--server', '--insecure', '--tls-skip-verify', '--sid', '--create', '--raw', '--protocol', '--transport', '--help']) {
      assert.ok(help.includes(flag), `--help documents ${flag}`);
    }
  });

  test('usage errors exit 2 with a message, never echoing the SID', async () => {
    const sid = randomSid().toString('hex');
    const cases: [string, string[]][] = [
      ['short --sid', ['--server', '127.0.0.1:1', '--insecure', '--sid', sid.slice(2)]],
      ['non-hex --sid', ['--server', '127.0.0.1:1', '--insecure', '--sid', `zz${sid.slice(2)}`]],
      ['missing --sid', ['--server', '127.0.0.1:1', '--insecure']],
      ['missing --server', ['--insecure', '--sid', sid]],
      ['bad --server', ['--server', '127.0.0.1', '--insecure', '--sid', sid]],
      ['both security flags', ['--server', '127.0.0.1:1', '--insecure', '--tls-skip-verify', '--sid', sid]],
      ['unknown flag', ['--server', '127.0.0.1:1', '--insecure', '--sid', sid, '--bogus']],
      ['positional argument', ['--server', '127.0.0.1:1', '--insecure', '--sid', sid, 'extra']],
      ['bad --protocol', ['--server', '127.0.0.1:1', '--insecure', '--sid', sid, '--protocol', 'v3']],
      ['bad --transport', ['--server', '127.0.0.1:1', '--insecure', '--sid', sid, '--transport', 'quic']],
    ];
    await Promise.all(
      cases.map(async ([name, args]) => {
        const pipe = new PipeProcess(args);
        assert.equal(await pipe.exitCode(), 2, `${name}: exit code`);
        assert.match(pipe.stderr, /^hashmail pipe: /, `${name}: message`);
        assert.ok(!pipe.stderr.includes(sid.slice(2, 40)), `${name}: SID not echoed`);
      }),
    );
    const badSid = new PipeProcess(['--server', '127.0.0.1:1', '--insecure', '--sid', 'abc']);
    assert.equal(await badSid.exitCode(), 2);
    assert.match(badSid.stderr, /--sid must be 128 hex characters/);
  });
});

describe('hashmail pipe: against a plain-text server', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer();
    servers.push(server);
  });

  test('without --create on a fresh SID it fails with "stream not found"', async () => {
    const pipe = new PipeProcess(pipeArgs(server, randomSid()));
    assert.equal(await pipe.exitCode(), 1);
    assert.match(pipe.stderr, /^hashmail pipe: .*stream not found/);
  });

  for (const protocol of ['auto', 'v1']) {
    test(`--protocol ${protocol}: two pipes exchange lines both ways, keep receiving after stdin ends, and exit 0 on SIGTERM`, async () => {
      const sid = randomSid();
      const flags = ['--protocol', protocol];
      const a = new PipeProcess(pipeArgs(server, sid, '--create', ...flags));
      await waitUntilReading(server.address, 'insecure', sid, a, 'probe');
      const b = new PipeProcess(pipeArgs(server, peerSid(sid), ...flags));

      a.write('hello from a\n');
      await b.waitForStdout((out) => out.toString() === 'hello from a\n', 'b to receive a line');

      // An empty line is an empty message; a last line without newline is still a message.
      b.write('hi from b\n\nno newline at the end');
      b.endInput();
      const expectedAtA = 'probe\nhi from b\n\nno newline at the end\n';
      await a.waitForStdout((out) => out.toString() === expectedAtA, 'a to receive three lines');

      // b's stdin has ended, but it still receives.
      a.write('after b hung up its sending half\n');
      await b.waitForStdout((out) => out.toString().endsWith('after b hung up its sending half\n'), 'b to keep receiving');
      assert.equal(b.stdout.toString(), 'hello from a\nafter b hung up its sending half\n');

      a.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      assert.equal(await a.exitCode(), 0, a.stderr);
      assert.equal(await b.exitCode(), 0, b.stderr);
      assert.equal(a.stdout.toString(), expectedAtA);
      if (protocol === 'v1') {
        assert.equal(a.stderr, '');
        assert.equal(b.stderr, '');
      } else {
        assertOnlyPresence(a.stderr, 'a');
        assertOnlyPresence(b.stderr, 'b');
      }
    });
  }

  test('--raw carries binary data intact (newlines, zero bytes, chunks over 64 KiB)', async () => {
    const sid = randomSid();
    const a = new PipeProcess(pipeArgs(server, sid, '--create', '--raw'));
    const probe = `probe-${randomBytes(8).toString('hex')}`;
    await waitUntilReading(server.address, 'insecure', sid, a, probe);
    const b = new PipeProcess(pipeArgs(server, peerSid(sid), '--raw'));

    const data = Buffer.concat([Buffer.from('line\n\0\r\n'), randomBytes(300 * 1024), Buffer.alloc(1000)]);
    a.write(data);
    a.endInput();
    await b.waitForStdout((out) => out.length >= data.length, 'b to receive all bytes');
    assert.ok(b.stdout.equals(data), 'b received exactly the bytes a read');

    const back = randomBytes(70 * 1024);
    b.write(back);
    await a.waitForStdout((out) => out.length >= probe.length + back.length, 'a to receive all bytes');
    assert.ok(a.stdout.equals(Buffer.concat([Buffer.from(probe), back])), 'a received exactly the bytes b read');

    a.child.kill('SIGINT');
    b.child.kill('SIGINT');
    assert.equal(await a.exitCode(), 0, a.stderr);
    assert.equal(await b.exitCode(), 0, b.stderr);
  });
});

describe('hashmail pipe: server lifecycle and TLS', () => {
  test('a server shutting down ends the pipe with exit 1 and "server shutting down"', async () => {
    const server = await startServer();
    servers.push(server);
    const sid = randomSid();
    const pipe = new PipeProcess(pipeArgs(server, sid, '--create'));
    await waitUntilReading(server.address, 'insecure', sid, pipe, 'probe');
    await server.stop();
    assert.equal(await pipe.exitCode(), 1);
    assert.match(pipe.stderr, /^hashmail pipe: server shutting down/);
  });

  test('--tls-skip-verify talks to a self-signed server; verified TLS and --insecure do not', async () => {
    const server = await startServer({ insecure: false });
    servers.push(server);
    const sid = randomSid();
    const tlsArgs = (s: Buffer, ...extra: string[]): string[] => ['--server', server.address, '--sid', s.toString('hex'), ...extra];

    const a = new PipeProcess(tlsArgs(sid, '--tls-skip-verify', '--create'));
    await waitUntilReading(server.address, 'tls-skip-verify', sid, a, 'probe');
    const b = new PipeProcess(tlsArgs(peerSid(sid), '--tls-skip-verify'));
    a.write('over tls\n');
    await b.waitForStdout((out) => out.toString() === 'over tls\n', 'b to receive over TLS');

    const verified = new PipeProcess(tlsArgs(randomSid(), '--create'));
    assert.equal(await verified.exitCode(), 1);
    assert.match(verified.stderr, /^hashmail pipe: .*certificate/m);

    const plain = new PipeProcess(tlsArgs(randomSid(), '--insecure', '--create'));
    assert.equal(await plain.exitCode(), 1);
    assert.match(plain.stderr, /^hashmail pipe: /m);

    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    assert.equal(await a.exitCode(), 0, a.stderr);
    assert.equal(await b.exitCode(), 0, b.stderr);
    // grpc-js names an IP address in TLS; Node's warning about it is no business of the pipe's user.
    for (const pipe of [a, b, verified]) assert.doesNotMatch(pipe.stderr, /DEP0123|DeprecationWarning/);
  });
});

describe('hashmail pipe: v2 and the WebSocket transport', () => {
  let server: RunningServer;
  let v1Only: RunningServer;
  before(async () => {
    [server, v1Only] = await Promise.all([startServer(), startServer({ env: { HASHMAIL_V2__ENABLED: 'false' } })]);
    servers.push(server, v1Only);
  });

  for (const transport of ['grpc', 'websocket']) {
    test(`${transport}: v2 waits for the peer, reports presence on stderr, exchanges both ways`, async () => {
      const sid = randomSid();
      const flags = ['--protocol', 'v2', '--transport', transport];
      const a = new PipeProcess(pipeArgs(server, sid, '--create', ...flags));
      // Written before the peer exists: the relay holds it for the peer (v1 would need the probe dance).
      a.write('early from a\n');
      // Both --create: in v2 either party may come first and wait for the other.
      const b = new PipeProcess(pipeArgs(server, peerSid(sid), '--create', ...flags));
      await waitForStderr(a, 'hashmail pipe: peer present');
      await waitForStderr(b, 'hashmail pipe: peer present');
      await b.waitForStdout((out) => out.toString() === 'early from a\n', 'b to receive the early line');
      b.write('back from b\n');
      await a.waitForStdout((out) => out.toString() === 'back from b\n', 'a to receive a line');

      b.child.kill('SIGTERM');
      assert.equal(await b.exitCode(), 0, b.stderr);
      await waitForStderr(a, 'hashmail pipe: peer absent');
      a.child.kill('SIGTERM');
      assert.equal(await a.exitCode(), 0, a.stderr);
      assertOnlyPresence(a.stderr, 'a');
      assertOnlyPresence(b.stderr, 'b');
    });
  }

  test('websocket --raw carries binary data both ways', async () => {
    const sid = randomSid();
    const flags = ['--transport', 'websocket', '--raw'];
    const a = new PipeProcess(pipeArgs(server, sid, '--create', ...flags));
    const b = new PipeProcess(pipeArgs(server, peerSid(sid), '--create', ...flags));
    await waitForStderr(a, 'hashmail pipe: peer present');
    const data = Buffer.concat([Buffer.from('x\n\0'), randomBytes(200 * 1024)]);
    a.write(data);
    await b.waitForStdout((out) => out.length >= data.length, 'b to receive all bytes');
    assert.ok(b.stdout.equals(data));
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    assert.equal(await a.exitCode(), 0, a.stderr);
    assert.equal(await b.exitCode(), 0, b.stderr);
  });

  test('--protocol v2 on a fresh SID without --create fails with "stream not found"', async () => {
    const pipe = new PipeProcess(pipeArgs(server, randomSid(), '--protocol', 'v2'));
    assert.equal(await pipe.exitCode(), 1);
    assert.match(pipe.stderr, /^hashmail pipe: .*stream not found/);
  });

  for (const transport of ['grpc', 'websocket']) {
    test(`${transport}: auto falls back to v1 on a v1-only server`, async () => {
      const sid = randomSid();
      const flags = ['--transport', transport];
      const a = new PipeProcess(pipeArgs(v1Only, sid, '--create', ...flags));
      await waitUntilReading(v1Only.address, 'insecure', sid, a, 'probe');
      const b = new PipeProcess(pipeArgs(v1Only, peerSid(sid), ...flags));
      b.write('over v1\n');
      await a.waitForStdout((out) => out.toString() === 'probe\nover v1\n', 'a to receive over v1');
      a.write('and back\n');
      await b.waitForStdout((out) => out.toString() === 'and back\n', 'b to receive over v1');
      a.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      assert.equal(await a.exitCode(), 0, a.stderr);
      assert.equal(await b.exitCode(), 0, b.stderr);
      assert.equal(a.stderr, '', 'v1 has no presence lines');
    });
  }

  test('websocket over TLS with --tls-skip-verify', async () => {
    const tls = await startServer({ insecure: false });
    servers.push(tls);
    const sid = randomSid();
    const args = (s: Buffer): string[] => ['--server', tls.address, '--tls-skip-verify', '--sid', s.toString('hex'), '--create', '--transport', 'websocket'];
    const a = new PipeProcess(args(sid));
    const b = new PipeProcess(args(peerSid(sid)));
    await waitForStderr(b, 'hashmail pipe: peer present');
    a.write('over wss\n');
    await b.waitForStdout((out) => out.toString() === 'over wss\n', 'b to receive over wss');
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    assert.equal(await a.exitCode(), 0, a.stderr);
    assert.equal(await b.exitCode(), 0, b.stderr);
  });

  test('--protocol v2 on a v1-only server fails', async () => {
    const pipe = new PipeProcess(pipeArgs(v1Only, randomSid(), '--protocol', 'v2', '--create'));
    assert.equal(await pipe.exitCode(), 1);
    assert.match(pipe.stderr, /^hashmail pipe: relay does not speak protocol v2/);
  });
});
