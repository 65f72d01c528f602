/**
 * gRPC transport for protocol v2: `hashmail.v2.Mailbox/Connect`, one
 * bidirectional stream per party. Decodes frames, calls the relay's
 * V2Mailbox, encodes; reading the client's stream one frame at a time while a
 * write waits is what holds a fast writer back (HTTP/2 flow control).
 */
import type { ServerDuplexStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import { SUPPORTED_VERSIONS, type V2Endpoint, type V2Mailbox } from '../../relay/v2-mailbox.js';
import { asHashmailError, HashmailError } from '../../session/errors.js';
import { shortHash } from '../../session/sid.js';
import {
  decodeClientFrame,
  decodeServerFrame,
  encodeDataFrame,
  encodeErrorFrame,
  encodeHello,
  encodeWelcome,
  PRESENCE_FRAMES,
  type ClientFrame,
  type Hello,
  type ServerFrame,
} from '../../wire/v2-frames.js';
import { ReadPump } from '../../relay/read-pump.js';
import { readWithPushBack } from '../grpc-read.js';
import { NOTHING_HELD, type StreamsPerConnection } from '../grpc-stream-limit.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';

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
};

export interface GrpcV2Deps {
  v2: V2Mailbox;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
  streams: StreamsPerConnection;
  clientAddress(call: ServerDuplexStream<unknown, unknown>): string;
}

type ConnectCall = ServerDuplexStream<ClientFrame | HashmailError, Uint8Array>;

export function mailboxV2Handlers(deps: GrpcV2Deps): UntypedServiceImplementation {
  const { v2, logger, stats, metrics } = deps;

  function connect(call: ConnectCall): void {
    const m = metrics.grpcCall(V2_SERVICE_NAME, 'Connect', 'bidi_stream');
    let gone = false;
    // Only while attaching: an AbortController per idle stream would cost memory for hours.
    let waiting: AbortController | null = null;
    let endpoint: V2Endpoint | undefined;
    let closeStream = NOTHING_HELD;
    call.once('cancelled', () => {
      gone = true;
      waiting?.abort();
      end(new HashmailError('CANCELLED'));
    });
    let ended = false;
    const end = (err: unknown): void => {
      if (ended) return;
      ended = true;
      closeStream();
      endpoint?.release();
      if (gone) {
        m.done(1);
        return;
      }
      if (err === null) {
        m.done(0);
        call.end();
        return;
      }
      const e = asHashmailError(err);
      stats.countError(e.code);
      if (e.code === 'INTERNAL') logger.error({ err }, 'internal error in v2 call');
      else logger.debug({ code: e.code }, 'v2 call failed');
      m.done(e.grpcCode);
      call.write(
        encodeErrorFrame({ code: e.grpcCode, message: e.message, supportedVersions: e.code === 'UNSUPPORTED_VERSION' ? [...SUPPORTED_VERSIONS] : [] }),
      );
      call.emit('error', { code: e.grpcCode, details: e.message });
    };
    const send = (frame: Uint8Array): boolean => {
      m.sent();
      return call.write(frame);
    };

    const attach = async (hello: Hello): Promise<void> => {
      waiting = new AbortController();
      const ep = await v2.attach(hello, { transport: 'grpc', address: deps.clientAddress(call) }, waiting.signal);
      waiting = null;
      if (ended || gone) {
        ep.release();
        return;
      }
      endpoint = ep;
      logger.debug({ sid: shortHash(hello.sid), version: ep.version }, 'v2 grpc party attached');
      ep.onClosed(end);
      ep.onPresence((present) => send(present ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent));
      send(encodeWelcome(ep.version, ep.peerPresent));
      const pump: ReadPump = new ReadPump(
        ep,
        (msg) => {
          if (send(encodeDataFrame(msg))) return true;
          call.once('drain', pump.resume);
          return false;
        },
        end,
      );
      pump.resume();
    };
    /** One frame; a promise when it must wait (attach, rate limit, full window). */
    const handle = (frame: ClientFrame | HashmailError): Promise<void> | undefined => {
      m.received();
      if (frame instanceof HashmailError) throw frame;
      if (!endpoint) {
        if (!('hello' in frame)) throw new HashmailError('MALFORMED_REQUEST', 'first frame must be hello');
        if (waiting) throw new HashmailError('MALFORMED_REQUEST', 'hello sent twice');
        return attach(frame.hello);
      }
      if ('hello' in frame) throw new HashmailError('MALFORMED_REQUEST', 'hello sent twice');
      return endpoint.write(asBuffer(frame.data));
    };

    // The client half-closing ends the party.
    readWithPushBack(call, handle, end, () => ended);
    try {
      closeStream = deps.streams.acquire(call.getPeer());
    } catch (err) {
      end(err);
    }
  }

  return {
    Connect: connect,
  };
}
