/**
 * etcd3 as the RPC layer only. The package's own policies are switched off
 * (its circuit breaker refuses every call for 5 s after three failures, its
 * retry has no deadline); instead every unary call here carries a deadline
 * (callTimeoutMs), tries the other endpoints while time remains, and fails
 * as DirectoryUnavailableError past it. Streams (watch, lease keepalive) are
 * opened raw; their owners handle loss.
 */
import { readFileSync } from 'node:fs';
import type { CallOptions } from '@grpc/grpc-js';
import { Etcd3, GRPCCancelledError, GRPCDeadlineExceededError, isRecoverableError, type IOptions } from 'etcd3';
import { DirectoryUnavailableError } from '../directory.js';
import type { EtcdDirectoryOptions } from './etcd-options.js';

/** gRPC pings: etcd rejects pings under 5 s as "excess pings" and closes the connection. */
export const GRPC_KEEPALIVE_TIME_MS = 10_000;
export const GRPC_KEEPALIVE_TIMEOUT_MS = 5_000;
/** One revision in which a relay's lease expires deletes thousands of keys at once. */
export const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;
/** Pause between tries of one call on another endpoint (connection refused answers at once). */
const RETRY_PAUSE_MS = 25;
/**
 * A call whose tries were all refused (no member listening) fails once it
 * has been refused this many times per endpoint, not at its deadline: with
 * etcd down, placements fail fast (about 0.1 s for one endpoint) instead of
 * each taking callTimeoutMs. The tries of a call go to the endpoints in
 * turn, so each is tried 4 times; a try that reaches a member (no answer in
 * time, "leader changed") keeps the call going until its deadline.
 */
export const REFUSALS_PER_ENDPOINT = 4;
/** The least one try gets when a call's deadline is shared among several endpoints (ms). */
const MIN_TRY_MS = 250;
/** A promise that outlives its gRPC deadline (e.g. stuck in auth) is abandoned this much later. */
const DEADLINE_SLACK_MS = 50;

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** A policy that runs the call once and never trips: our deadline and retry loop decide instead. */
const passThrough = {
  // async: a synchronous throw inside must become a rejection (etcd3 throws on purpose in markFailed).
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T) => fn({ signal: new AbortController().signal }),
} as unknown as Policy;

export function etcd3Options(options: Pick<EtcdDirectoryOptions, 'endpoints' | 'auth' | 'tls'>, dialTimeoutMs: number): IOptions {
  const config: IOptions = {
    hosts: options.endpoints,
    dialTimeout: dialTimeoutMs,
    faultHandling: { host: () => passThrough, global: passThrough },
    grpcOptions: {
      'grpc.keepalive_time_ms': GRPC_KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': GRPC_KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
    },
  };
  if (options.auth.username) config.auth = { username: options.auth.username, password: options.auth.password };
  if (options.tls.caFile || options.tls.certFile) {
    config.credentials = {
      rootCertificate: options.tls.caFile ? readFileSync(options.tls.caFile) : Buffer.alloc(0),
      ...(options.tls.certFile ? { certChain: readFileSync(options.tls.certFile) } : {}),
      ...(options.tls.keyFile ? { privateKey: readFileSync(options.tls.keyFile) } : {}),
    };
  }
  return config;
}

/**
 * A try that reached no etcd process at all: nothing listening, or the
 * connection reset, dropped or unwritable before any answer (the member it
 * was open to went away: the first call after etcd's death meets that).
 */
function reachedNoMember(err: unknown): boolean {
  if (err instanceof GRPCDeadlineExceededError || (err instanceof DirectoryUnavailableError && err.kind === 'deadline')) return false;
  return /ECONNREFUSED|ECONNRESET|EPIPE|No connection established|Failed to connect|Connection dropped|Write (error|failed)/i.test(describe(err));
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class EtcdRpc {
  /**
   * One client per endpoint, for calls and streams alike. The package's pool
   * picks a member at random for each call, so every try of a call could go
   * to one member that stopped answering, and a broken stream could reopen
   * on the dead member again; here a call's tries and a stream's reopenings
   * go to the NEXT endpoint.
   */
  private readonly clients: Etcd3[];
  private streamIndex = Math.floor(Math.random() * 1_000_000);
  /** Where the next unary call's first try goes: calls start at the endpoints in turn. */
  private unaryIndex = Math.floor(Math.random() * 1_000_000);
  /** Refused tries after which a call that reached no member gives up (REFUSALS_PER_ENDPOINT per endpoint). */
  private readonly maxRefusals: number;
  /** Unary calls and stream opens sent to etcd (tests and metrics: a cached lookup adds none). */
  calls = 0;
  lastError = '';
  private closed = false;

  constructor(
    options: Pick<EtcdDirectoryOptions, 'endpoints' | 'auth' | 'tls'>,
    private readonly callTimeoutMs: number,
  ) {
    this.maxRefusals = REFUSALS_PER_ENDPOINT * Math.max(1, options.endpoints.length);
    this.clients = options.endpoints.map((e) => new Etcd3(etcd3Options({ ...options, endpoints: [e] }, callTimeoutMs)));
  }

  /** The client streams open on; `moveOn` after a stream broke or stalled. */
  streamClient(moveOn = false): Etcd3 {
    if (moveOn) this.streamIndex++;
    return this.clients[this.streamIndex % this.clients.length];
  }

  /**
   * Runs one unary call under a deadline. Transport failures try another
   * endpoint while time remains; past the deadline, or once every try so far
   * was refused REFUSALS_PER_ENDPOINT times per endpoint (no etcd at all), it
   * rejects with DirectoryUnavailableError. etcd's own answers (lease not
   * found, compacted) pass through unchanged.
   */
  async call<T>(what: string, fn: (options: CallOptions, client: Etcd3) => Promise<T>, timeoutMs = this.callTimeoutMs): Promise<T> {
    if (this.closed) throw new DirectoryUnavailableError('closed', 'closed');
    const deadline = Date.now() + timeoutMs;
    const endpoints = this.clients.length;
    // With several members, one try gets its share of the deadline: a member that stopped answering (paused, cut
    // off, stalled on its disk) costs one share, then the next member is asked. The pool's own pick is random and
    // could send every try of a call to that one member.
    const tryMs = Math.max(MIN_TRY_MS, timeoutMs / endpoints);
    let endpoint = this.unaryIndex++;
    // Whether some member was reached but could not answer (no answer in time, or "leader changed"): etcd is
    // there but electing or slow, unlike every try refused at once (no etcd at all).
    let reachedButStuck = false;
    let unreached = 0;
    for (;;) {
      this.calls++;
      const tryDeadline = endpoints > 1 ? Math.min(deadline, Date.now() + tryMs) : deadline;
      const client = this.clients[endpoint++ % endpoints];
      try {
        return await this.withDeadline(fn({ deadline: tryDeadline }, client), tryDeadline);
      } catch (err) {
        const transport =
          err instanceof DirectoryUnavailableError ||
          err instanceof GRPCDeadlineExceededError ||
          err instanceof GRPCCancelledError ||
          (err instanceof Error && isRecoverableError(err));
        if (!transport) throw err;
        this.lastError = `${what}: ${describe(err)}`;
        // Judged over every try, not the last one: after a leader's loss the last try may well have gone to the
        // dead member (refused) while an earlier one waited on a live member through the election.
        if (!reachedNoMember(err)) reachedButStuck = true;
        else unreached++;
        const nobodyThere = !reachedButStuck && unreached >= this.maxRefusals;
        if (this.closed || nobodyThere || Date.now() + RETRY_PAUSE_MS >= deadline) throw new DirectoryUnavailableError(this.lastError, reachedButStuck ? 'deadline' : 'etcd');
        await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
      }
    }
  }

  private withDeadline<T>(promise: Promise<T>, deadline: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DirectoryUnavailableError('deadline exceeded', 'deadline')), Math.max(0, deadline - Date.now()) + DEADLINE_SLACK_MS);
    });
    return Promise.race([promise, late]).finally(() => clearTimeout(timer));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clients) c.close();
  }
}
