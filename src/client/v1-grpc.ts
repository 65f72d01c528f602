/**
 * Node-only: protocol v1 over gRPC, on the legacy client pieces `hashmail
 * pipe` uses (legacy-grpc.ts). A fresh channel per attempt, like v2.
 */
import { ConnectionLost, toClientError, type HashmailClientError } from './errors.js';
import { asBuffer, credentialsFor, grpcError, securityOf } from './grpc-channel.js';
import { LegacyHashMailClient } from './legacy-grpc.js';
import type { LinkOpener, LinkRequest } from './link.js';
import { openV1Link, type ReceiveHalf, type ReceiveSink, type SendHalf, type V1Halves } from './v1-link.js';
import { CLOSE_WAIT_MS } from './link.js';

class GrpcHalves implements V1Halves {
  private readonly client: LegacyHashMailClient;
  private disposed = false;

  constructor(req: LinkRequest) {
    this.client = new LegacyHashMailClient({
      address: req.server.authority,
      security: securityOf(req.server, req.tlsSkipVerify),
      credentials: credentialsFor(req.server, req.tlsSkipVerify, req.tls),
    });
  }

  async createBoxes(sid: Uint8Array, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw new ConnectionLost('connect aborted');
    try {
      await this.client.createBoxes(sid);
    } catch (err) {
      throw grpcError(err);
    }
  }

  openReceive(sid: Uint8Array, sink: ReceiveSink): ReceiveHalf {
    const stream = this.client.openReceive(sid);
    let paused: { promise: Promise<void>; resolve: () => void } | null = null;
    const pump = async (): Promise<void> => {
      // Pulling is the flow control: while paused the loop waits, grpc-js stops reading, HTTP/2 holds the relay back.
      for await (const msg of stream) {
        sink.message(msg);
        if (paused) await paused.promise;
      }
    };
    pump().then(
      () => sink.ended(null),
      (err: unknown) => sink.ended(grpcError(err)),
    );
    return {
      pause: () => {
        if (paused) return;
        let resolve: () => void = () => undefined;
        const promise = new Promise<void>((r) => {
          resolve = r;
        });
        paused = { promise, resolve };
      },
      resume: () => {
        paused?.resolve();
        paused = null;
      },
      cancel: () => {
        paused?.resolve();
        stream.cancel();
      },
    };
  }

  openSend(sid: Uint8Array, onEnded: (err: HashmailClientError | null) => void): SendHalf {
    const stream = this.client.openSend(sid);
    let ending = false;
    stream.done.then(
      () => {
        if (!ending) onEnded(null);
      },
      (err: unknown) => onEnded(grpcError(err)),
    );
    return {
      write: async (msg) => {
        try {
          await stream.write(asBuffer(msg));
        } catch (err) {
          throw toClientError(err instanceof Error && 'code' in err ? grpcError(err) : err);
        }
      },
      end: async () => {
        ending = true;
        stream.end();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([stream.done.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
        clearTimeout(timer);
      },
      cancel: () => {
        ending = true;
        stream.cancel();
      },
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.client.close();
  }
}

export const openV1Grpc: LinkOpener = (req, handlers) => openV1Link(() => new GrpcHalves(req), req, handlers);
