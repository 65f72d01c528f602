/**
 * The gateway's end of a hop lane: one LegacyHop/Carry stream on a pool
 * connection, carrying every legacy half the gateway places there. Each half
 * gets an id (never reused on the lane); frames from the relay go to the half
 * they name. The lane is read without pause: what a half may have in flight
 * is bounded by its credit, so no half can hold up the others. When the
 * stream fails (connection lost, relay killed), every half on it ends with
 * the error and the pool opens a new lane for the next half.
 */
import type { Client, ClientDuplexStream, Metadata, ServiceError } from '@grpc/grpc-js';
import { HashmailError } from '../session/errors.js';
import { encodeControlFrame, encodeHopFrame, FrameKind, type FrameKindValue, type HopFrame } from '../transport/grpc-hop/frame.js';
import { endFrameError, hopError } from '../transport/grpc-hop/hop-status.js';
import { hopService } from '../transport/grpc-hop/service.js';

/** Half ids are uint32 on the wire; a lane that used them all is retired. */
const MAX_HALF_ID = 0xffffffff;

/** What a lane tells one of its halves. */
export interface LaneEndpoint {
  attached(credit: number): void;
  data(msg: Buffer): void;
  credit(bytes: number): void;
  /** END from the relay: null is OK (a finished writer's messages are all taken). */
  ended(err: HashmailError | null): void;
  /** The lane itself is gone. */
  lost(err: HashmailError): void;
}

export class HopLane {
  private readonly call: ClientDuplexStream<Buffer, HopFrame>;
  private readonly halves = new Map<number, LaneEndpoint>();
  private nextId = 1;
  private lostErr: HashmailError | null = null;

  constructor(client: Client, metadata: Metadata) {
    const def = hopService.Carry;
    this.call = client.makeBidiStreamRequest<Buffer, HopFrame>(def.path, def.requestSerialize, def.responseDeserialize, metadata);
    this.call.on('data', (f: HopFrame) => this.dispatch(f));
    this.call.on('error', (err: ServiceError) => this.lose(hopError(err)));
    // The relay never ends a lane OK while the gateway uses it.
    this.call.on('status', (s: { code: number }) => {
      if (s.code === 0) this.lose(new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (lane ended)'));
    });
  }

  /** False once the lane failed or used up its half ids: the pool opens a new one. */
  get usable(): boolean {
    return this.lostErr === null && this.nextId <= MAX_HALF_ID;
  }

  /** Halves on the lane now (tests). */
  get size(): number {
    return this.halves.size;
  }

  /** Registers `endpoint` and sends its OPEN frame; returns its id. */
  open(endpoint: LaneEndpoint, kind: typeof FrameKind.OPEN_RECV | typeof FrameKind.OPEN_SEND, streamId: Buffer, clientAddress: string, credit: number): number {
    if (this.lostErr) throw this.lostErr;
    const id = this.nextId++;
    this.halves.set(id, endpoint);
    this.call.write(encodeHopFrame({ half: id, kind, streamId, clientAddress, credit }));
    return id;
  }

  /** A frame the half already encoded (DATA). */
  write(frame: Buffer): void {
    if (!this.lostErr) this.call.write(frame);
  }

  control(id: number, kind: FrameKindValue, credit = 0): void {
    if (!this.lostErr) this.call.write(encodeControlFrame(id, kind, credit));
  }

  /** The half is over here; with `cancel` the relay is told to free its slot. */
  forget(id: number, cancel: boolean): void {
    if (!this.halves.delete(id)) return;
    if (cancel) this.control(id, FrameKind.CANCEL);
  }

  /** Closes the lane: every half on it ends with `err`. */
  close(err: HashmailError): void {
    this.lose(err);
    this.call.cancel();
  }

  private dispatch(f: HopFrame): void {
    const half = this.halves.get(f.half);
    // A half forgotten here (released) whose frames were already on their way.
    if (!half) return;
    switch (f.kind) {
      case FrameKind.ATTACHED:
        half.attached(f.credit ?? 0);
        return;
      case FrameKind.DATA:
        half.data(f.msg ?? Buffer.alloc(0));
        return;
      case FrameKind.CREDIT:
        half.credit(f.credit ?? 0);
        return;
      case FrameKind.END:
        this.halves.delete(f.half);
        half.ended(f.errorCode === undefined ? null : endFrameError(f));
        return;
      default:
        // The gateway's own kinds never come back; a relay that sends them is broken.
        this.close(new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (unexpected frame kind ${f.kind})`));
    }
  }

  private lose(err: HashmailError): void {
    if (this.lostErr) return;
    this.lostErr = err;
    const halves = [...this.halves.values()];
    this.halves.clear();
    for (const h of halves) h.lost(err);
  }
}
