/**
 * Node-only: the gRPC lookup, unary `/hashmail.v2.Mailbox/ServerForMailbox`.
 * The channel is made ready first (failing at its first failed connection
 * attempt, as the link openers do, not at the deadline), so that an UNAVAILABLE from the call is
 * the instance's answer ("directory unavailable") and an instance that cannot
 * be reached is told apart (LookupUnreachable).
 */
import { connectivityState, type Client, Metadata, status, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { decodeServerForMailboxResponse, encodeServerForMailboxRequest, type ServerForMailboxRequest, type ServerForMailboxResponse } from '../wire/v2-frames.js';
import { ConnectionLost, errorFromStatus, StatusCode } from './errors.js';
import { asBuffer } from './grpc-channel.js';
import { acquireChannel, isStreamLimitRefusal, MAX_STREAM_LIMIT_RETRIES } from './grpc-channels.js';
import { errorText } from './legacy-grpc.js';
import { LOOKUP_TIMEOUT_MS, LookupUnreachable, lookupTimeoutMs, type LookupAnswer, type RelayLookup } from './relay-lookup.js';

export const SERVER_FOR_MAILBOX_PATH = '/hashmail.v2.Mailbox/ServerForMailbox';

export const grpcRelayLookup: RelayLookup = (req) => lookUpOnChannel(req, 0);

/** The lookup on a shared channel; one the server refused for its connection's stream limit is sent again on another. */
const lookUpOnChannel = (req: Parameters<RelayLookup>[0], retries: number): Promise<LookupAnswer> =>
  new Promise<LookupAnswer>((resolve, reject) => {
    const { client, release, refused } = acquireChannel(req);
    // Connecting is bounded as any lookup; the call itself may also wait out its hold.
    const readyBy = Date.now() + LOOKUP_TIMEOUT_MS;
    const deadline = Date.now() + lookupTimeoutMs(req);
    let call: ClientUnaryCall | null = null;
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      req.signal.removeEventListener('abort', onAbort);
      call?.cancel();
      release();
      fn();
    };
    const onAbort = (): void => settle(() => reject(new ConnectionLost('connect aborted', { cause: req.signal.reason })));
    if (req.signal.aborted) return onAbort();
    req.signal.addEventListener('abort', onAbort, { once: true });
    whenReady(client, readyBy, (readyErr) => {
      if (settled) return;
      if (readyErr) {
        return settle(() => reject(new LookupUnreachable(`relay lookup at ${req.server.authority} failed: ${readyErr.message}`, { cause: readyErr })));
      }
      call = client.makeUnaryRequest(
        SERVER_FOR_MAILBOX_PATH,
        (r: ServerForMailboxRequest) => asBuffer(encodeServerForMailboxRequest(r)),
        (buf: Buffer) => decodeServerForMailboxResponse(buf),
        {
          route: req.route,
          create: req.create,
          ...(req.wait ? { unreachable: req.wait.unreachable, waitMs: Math.round(req.wait.ms), unreachableStartedAt: req.wait.unreachableStartedAt ?? 0 } : {}),
        },
        new Metadata(),
        { deadline },
        (err: ServiceError | null, res?: ServerForMailboxResponse) => {
          call = null;
          if (err && isStreamLimitRefusal(err) && retries < MAX_STREAM_LIMIT_RETRIES) {
            refused();
            return settle(() => lookUpOnChannel(req, retries + 1).then(resolve, reject));
          }
          settle(() => {
            if (!err && res?.address) return resolve({ kind: 'owner', id: res.id, address: res.address, ...(res.startedAt ? { startedAt: res.startedAt } : {}) });
            if (!err) return resolve({ kind: 'not-served', why: 'ServerForMailbox answered without an address' });
            if (err.code === status.UNIMPLEMENTED) return resolve({ kind: 'not-served', why: 'UNIMPLEMENTED' });
            if (err.code === status.NOT_FOUND) return resolve({ kind: 'not-placed', message: errorText(err) });
            if (err.code === status.RESOURCE_EXHAUSTED) return reject(new ConnectionLost(errorText(err), { code: StatusCode.RESOURCE_EXHAUSTED, cause: err }));
            reject(errorFromStatus(err.code, errorText(err), [], err));
          });
        },
      );
    });
  });

/** Calls back once the channel is READY, or with an error at its first failed connection attempt or the deadline. */
function whenReady(client: Client, deadline: number, done: (err: Error | null) => void): void {
  const channel = client.getChannel();
  const check = (): void => {
    const state = channel.getConnectivityState(true);
    if (state === connectivityState.READY) return done(null);
    if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN) return done(new Error('no connection established'));
    channel.watchConnectivityState(state, deadline, (err) => (err ? done(err) : check()));
  };
  check();
}
