/**
 * gRPC transport for the legacy `hashmailrpc.HashMail` service: decodes,
 * calls the mailbox's legacy operations, encodes. No protocol decisions here.
 */
import type {
  sendUnaryData,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { CallInfo, LegacyOperations, LegacySend } from '../../relay/legacy-operations.js';
import { HashmailError } from '../../session/errors.js';
import { shortHash } from '../../session/sid.js';
import { cipherBoxDescField, encodeOutgoingCipherBoxReused, type CipherBox, type CipherBoxAuth, type CipherBoxDesc, type OutgoingCipherBox } from './codec.js';
import { ReadPump } from '../../relay/read-pump.js';
import { readWithPushBack } from '../grpc-read.js';
import { GrpcCallScope } from '../grpc-call-scope.js';
import { noteError } from '../report-error.js';
import { NOTHING_HELD, type StreamsPerConnection } from '../grpc-stream-limit.js';
import { hashMailService, type CipherInitResp } from './service.js';
import { tolerant } from '../tolerant-service.js';

export type GrpcCallType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/** Per-call metric hooks (implemented by observe/metrics.ts). */
export interface GrpcCallMetrics {
  received(): void;
  sent(): void;
  done(code: number): void;
}
export interface GrpcMetricsHook {
  grpcCall(service: string, method: string, type: GrpcCallType): GrpcCallMetrics;
}

const SERVICE_NAME = 'hashmailrpc.HashMail';

export const hashMailServerService: ServiceDefinition = {
  NewCipherBox: { ...hashMailService.newCipherBox, requestDeserialize: tolerant(hashMailService.newCipherBox.requestDeserialize) },
  DelCipherBox: { ...hashMailService.delCipherBox, requestDeserialize: tolerant(hashMailService.delCipherBox.requestDeserialize) },
  SendStream: { ...hashMailService.sendStream, requestDeserialize: tolerant(hashMailService.sendStream.requestDeserialize) },
  RecvStream: {
    ...hashMailService.recvStream,
    requestDeserialize: tolerant(hashMailService.recvStream.requestDeserialize),
    // grpc-js copies a response into its own framed buffer as it serializes it, so one reused buffer serves every stream.
    responseSerialize: encodeOutgoingCipherBoxReused,
  },
};

export interface GrpcV1Deps {
  mailbox: LegacyOperations;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
  streams: StreamsPerConnection;
  /** Client address for per-address limits: from the call's peer (or a trusted X-Forwarded-For). */
  clientAddress(call: ServerUnaryCall<unknown, unknown> | ServerReadableStream<unknown, unknown> | ServerWritableStream<unknown, unknown>): string;
}

interface GrpcStatus {
  code: number;
  details: string;
}

export function legacyGrpcHandlers(deps: GrpcV1Deps): UntypedServiceImplementation {
  const { mailbox, logger, metrics } = deps;

  const toStatus = (err: unknown, method: string): GrpcStatus => {
    const e = noteError(deps, err, { transport: 'grpc', call: method });
    return { code: e.grpcCode, details: e.message };
  };

  const unary =
    (method: 'NewCipherBox' | 'DelCipherBox', run: (req: CipherBoxAuth, info: CallInfo) => Promise<void> | void) =>
    async (call: ServerUnaryCall<CipherBoxAuth | HashmailError, CipherInitResp>, callback: sendUnaryData<unknown>): Promise<void> => {
      const m = metrics.grpcCall(SERVICE_NAME, method, 'unary');
      m.received();
      let closeStream = NOTHING_HELD;
      try {
        closeStream = deps.streams.acquire(call.getPeer());
        if (call.request instanceof HashmailError) throw call.request;
        await run(call.request, { transport: 'grpc', address: deps.clientAddress(call) });
        closeStream();
        m.sent();
        m.done(0);
        callback(null, { success: true });
      } catch (err) {
        closeStream();
        const status = toStatus(err, method);
        m.done(status.code);
        callback(status);
      }
    };

  return {
    NewCipherBox: unary('NewCipherBox', (req, info) => mailbox.newCipherBox(req, info)),
    DelCipherBox: unary('DelCipherBox', (req, info) => mailbox.delCipherBox(req, info)),

    RecvStream: (call: ServerWritableStream<CipherBoxDesc | HashmailError, OutgoingCipherBox>): void => {
      void receive(call);
    },

    SendStream: send,
  };

  async function receive(call: ServerWritableStream<CipherBoxDesc | HashmailError, OutgoingCipherBox>): Promise<void> {
    const m = metrics.grpcCall(SERVICE_NAME, 'RecvStream', 'server_stream');
    m.received();
    const scope = new GrpcCallScope(call, m, (err) => {
      const status = toStatus(err, 'RecvStream');
      m.done(status.code);
      call.emit('error', status);
    });
    try {
      scope.holdStream(deps.streams.acquire(call.getPeer()));
      if (call.request instanceof HashmailError) throw call.request;
      const desc = call.request;
      const half = await mailbox.openReceive(desc.streamId, { transport: 'grpc', address: deps.clientAddress(call) }, scope.beginWait());
      if (!scope.attached(() => half.release())) return;
      logger.debug({ sid: shortHash(desc.streamId) }, 'grpc reader attached');
      half.onBoxClosed(scope.fail);
      const descField = cipherBoxDescField(desc);
      const pump: ReadPump = new ReadPump(
        half,
        (msg, flushed) => {
          m.sent();
          if (call.write({ descField, msg }, flushed)) return true;
          call.once('drain', pump.resume);
          return false;
        },
        scope.fail,
      );
      pump.resume();
    } catch (err) {
      scope.end(err);
    }
  }

  function send(call: ServerReadableStream<CipherBox | HashmailError, CipherBoxDesc>, callback: sendUnaryData<CipherBoxDesc>): void {
    const m = metrics.grpcCall(SERVICE_NAME, 'SendStream', 'client_stream');
    const scope = new GrpcCallScope(call, m, (err) => {
      if (err === null) {
        m.done(0);
        callback(null, { streamId: Buffer.alloc(0) });
        return;
      }
      const status = toStatus(err, 'SendStream');
      m.done(status.code);
      callback(status);
      // Stop reading: the call is over whatever the client still sends.
      call.destroy();
    });
    let half: LegacySend | null = null;
    const attach = async (box: CipherBox): Promise<void> => {
      const h = await mailbox.openSend(box.desc, { transport: 'grpc', address: deps.clientAddress(call) }, scope.beginWait());
      if (!scope.attached(() => h.release())) return;
      half = h;
      logger.debug({ sid: shortHash(box.desc?.streamId ?? Buffer.alloc(0)) }, 'grpc writer attached');
      h.onBoxClosed(scope.fail);
      await h.write(box.msg);
    };
    /** One message; a promise when it must wait (slot, rate limit, full box). */
    const handle = (box: CipherBox | HashmailError): Promise<void> | undefined => {
      m.received();
      if (box instanceof HashmailError) throw box;
      return half ? half.write(box.msg) : attach(box);
    };
    /** The client half-closed: answer OK once the mailbox holds every message (a gateway waits for the relay). */
    const ended = (err: unknown): void => {
      const finishing = err === null ? half?.finish() : undefined;
      if (finishing) finishing.then(() => scope.end(null), scope.fail);
      else scope.end(err);
    };
    readWithPushBack(call, handle, ended, () => scope.ended);
    try {
      scope.holdStream(deps.streams.acquire(call.getPeer()));
    } catch (err) {
      scope.end(err);
    }
  }
}
