/**
 * gRPC transport for protocol v2: `hashmail.v2.Mailbox/Connect`, one
 * bidirectional stream per party. Decodes frames, calls the relay's
 * V2Mailbox, encodes; reading the client's stream one frame at a time while a
 * write waits is what holds a fast writer back (HTTP/2 flow control).
 */
import type { ServerDuplexStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { V2Endpoint, V2Mailbox } from '../../relay/v2-mailbox.js';
import { HashmailError } from '../../session/errors.js';
import { shortHash } from '../../session/sid.js';
import {
  decodeClientFrame,
  decodeServerFrame,
  encodeDataFrame,
  encodeHello,
  encodeWelcome,
  PRESENCE_FRAMES,
  type ClientFrame,
  type Hello,
  type ServerFrame,
} from '../../wire/v2-frames.js';
import { ReadPump } from '../../relay/read-pump.js';
import { readWithPushBack } from '../grpc-read.js';
import { GrpcCallScope } from '../grpc-call-scope.js';
import { noteError } from '../report-error.js';
import { v2ErrorFrame } from '../v2-error-frame.js';
import type { StreamsPerConnection } from '../grpc-stream-limit.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';
import { serverForMailboxHandler, serverForMailboxMethod, serverForMailboxServerMethod } from './server-for-mailbox.js';
import type { RouteLookup } from '../../directory/route-lookup.js';
import type { AnsweredAs } from '../reached-address.js';

export const V2_SERVICE_NAME = 'hashmail.v2.Mailbox';
export const V2_CONNECT_PATH = `/${V2_SERVICE_NAME}/Connect`;

/** A Uint8Array as a Buffer without copying (grpc-js wants Buffers). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Client-side definition (tests, the client library); frames as the codec's objects. */
export const mailboxV2Service = {
  Connect: {
    path: V2_CONNECT_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: (frame: ClientFrame): Buffer =>
      asBuffer('hello' in frame ? encodeHello(frame.hello) : encodeDataFrame(frame.data)),
    requestDeserialize: (b: Buffer): ClientFrame => decodeClientFrame(b),
    responseSerialize: (b: Uint8Array): Buffer => asBuffer(b),
    responseDeserialize: (b: Buffer): ServerFrame => decodeServerFrame(b),
  },
  ServerForMailbox: serverForMailboxMethod,
} satisfies ServiceDefinition;

/** Server side: frames the handler encodes itself; a frame that fails to decode becomes an INVALID_ARGUMENT answer. */
export const mailboxV2ServerService: ServiceDefinition = {
  Connect: {
    ...mailboxV2Service.Connect,
    requestDeserialize: (b: Buffer): ClientFrame | HashmailError => {
      try {
        return decodeClientFrame(b);
      } catch (err) {
        return new HashmailError('MALFORMED_REQUEST', `malformed frame: ${(err as Error).message}`);
      }
    },
  },
  ServerForMailbox: serverForMailboxServerMethod,
};

export interface GrpcV2Deps {
  /** null: v2 streams are off (v2.enabled false); lookups are still answered. */
  v2: V2Mailbox | null;
  lookup: RouteLookup;
  /** The address ServerForMailbox gives out for an owner (reached-address.ts); default as registered. */
  answeredAs?: AnsweredAs;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
  streams: StreamsPerConnection;
  clientAddress(call: ServerDuplexStream<unknown, unknown>): string;
}

type ConnectCall = ServerDuplexStream<ClientFrame | HashmailError, Uint8Array>;

export function mailboxV2Handlers(deps: GrpcV2Deps): UntypedServiceImplementation {
  const { logger, metrics } = deps;

  function connect(call: ConnectCall, v2: V2Mailbox): void {
    const m = metrics.grpcCall(V2_SERVICE_NAME, 'Connect', 'bidi_stream');
    const scope = new GrpcCallScope(call, m, (err) => {
      if (err === null) {
        m.done(0);
        call.end();
        return;
      }
      const e = noteError(deps, err, { transport: 'grpc', call: 'v2' });
      m.done(e.grpcCode);
      call.write(v2ErrorFrame(e));
      call.emit('error', { code: e.grpcCode, details: e.message });
    });
    let endpoint: V2Endpoint | null = null;
    /** `flushed` runs once grpc-js has written the frame out (or the call failed). */
    const send = (frame: Uint8Array, flushed?: () => void): boolean => {
      m.sent();
      return call.write(frame, flushed);
    };

    const attach = async (hello: Hello): Promise<void> => {
      const ep = await v2.attach(hello, { transport: 'grpc', address: deps.clientAddress(call) }, scope.beginWait());
      if (!scope.attached(() => ep.release())) return;
      endpoint = ep;
      logger.debug({ sid: shortHash(hello.sid), version: ep.version }, 'v2 grpc party attached');
      ep.onClosed(scope.fail);
      ep.onPresence((present) => send(present ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent));
      send(encodeWelcome(ep.version, ep.peerPresent, ep.maxMessageBytes));
      const pump: ReadPump = new ReadPump(
        ep,
        (msg, flushed) => {
          if (send(encodeDataFrame(msg), flushed)) return true;
          call.once('drain', pump.resume);
          return false;
        },
        scope.fail,
      );
      pump.resume();
    };
    /**
     * One frame; a promise when it must wait (attach, rate limit, full
     * window). No frame arrives while one waits: the call is paused.
     */
    const handle = (frame: ClientFrame | HashmailError): Promise<void> | undefined => {
      m.received();
      if (frame instanceof HashmailError) throw frame;
      if (!endpoint) {
        if (!('hello' in frame)) throw new HashmailError('MALFORMED_REQUEST', 'first frame must be hello');
        return attach(frame.hello);
      }
      if ('hello' in frame) throw new HashmailError('MALFORMED_REQUEST', 'hello sent twice');
      return endpoint.write(asBuffer(frame.data));
    };

    // The client half-closing ends the party.
    readWithPushBack(call, handle, scope.fail, () => scope.ended);
    try {
      scope.holdStream(deps.streams.acquire(call.getPeer()));
    } catch (err) {
      scope.end(err);
    }
  }


  const v2 = deps.v2;
  const lookup = serverForMailboxHandler(deps);
  // Without Connect grpc-js answers it UNIMPLEMENTED, as on a v1-only server.
  return v2 ? { Connect: (call: ConnectCall) => connect(call, v2), ServerForMailbox: lookup } : { ServerForMailbox: lookup };
}
