/**
 * One LNC session through a relay under test: the node side (litd, always
 * gRPC) reads C2S and writes S2C; the app side reads S2C and writes C2S over
 * gRPC (mobile) or two WebSockets (browser). Opening it creates the boxes as
 * litd does and exchanges one message each way, so an open session is known
 * to relay.
 */
import { routeOfSid } from '../src/directory/route.js';
import { createBox, dialGrpc, GrpcInlet, GrpcOutlet, type HashMailStub, type Inlet, type Outlet, type Sink } from './grpc-party.js';
import { GrpcV2Link, WsV2Link, type MailboxV2Stub, type V2Transport } from './v2-party.js';
import { newSidPair, type SidPair, type Target } from './wire.js';
import { WsInlet, WsOutlet } from './ws-party.js';
import { isPortTaken } from './source-ports.js';

export type AppTransport = 'grpc' | 'ws';

/** A protocol-v2 session: each party one full-duplex stream over its transport. */
export interface V2Shape {
  node: V2Transport;
  app: V2Transport;
}

/** Messages a party keeps for a listener that is not set yet (hello messages, a racing first message). */
const MAX_EARLY_MESSAGES = 1024;
const HELLO = Buffer.from('hello');

/** One side of a session: its receive half, its send half, and what it received. */
export class Party implements Sink {
  failure: string | null = null;
  inlet: Inlet | null = null;
  outlet: Outlet | null = null;
  private listener: ((msg: Buffer) => void) | null = null;
  private readonly early: Buffer[] = [];
  private readonly failWaiters = new Set<(reason: string) => void>();

  message(msg: Buffer): void {
    if (this.listener) this.listener(msg);
    else if (this.early.length < MAX_EARLY_MESSAGES) this.early.push(msg);
  }

  fail(reason: string): void {
    if (this.failure !== null) return;
    this.failure = reason;
    for (const w of this.failWaiters) w(reason);
    this.failWaiters.clear();
  }

  /** Every message from now on (and any that arrived early) goes to `fn`; null stops. */
  listen(fn: ((msg: Buffer) => void) | null): void {
    this.listener = fn;
    while (fn && this.listener === fn && this.early.length > 0) fn(this.early.shift()!);
  }

  /** Resolves `reason` when the party fails (at once if it has). */
  onFailure(fn: (reason: string) => void): () => void {
    if (this.failure !== null) {
      fn(this.failure);
      return () => undefined;
    }
    this.failWaiters.add(fn);
    return () => this.failWaiters.delete(fn);
  }

  /** The next message, or rejects on failure or after `timeoutMs`. */
  next(timeoutMs: number): Promise<Buffer> {
    // Already failed: say why (onFailure would call back before `off` below exists).
    if (this.failure !== null) return Promise.reject(new Error(this.failure));
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        off();
        this.listener = null;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no message within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onFailure((reason) => {
        done();
        reject(new Error(reason));
      });
      this.listen((msg) => {
        done();
        resolve(msg);
      });
    });
  }

  send(msg: Buffer): boolean {
    return this.outlet!.write(msg);
  }

  /** Waits until the send half takes more; rejects if the party fails first. */
  drain(): Promise<void> {
    if (this.failure !== null) return Promise.reject(new Error(this.failure));
    return new Promise((resolve, reject) => {
      const off = this.onFailure((reason) => reject(new Error(reason)));
      this.outlet!.drain().then(() => {
        off();
        resolve();
      }, reject);
    });
  }

  close(): void {
    this.inlet?.close();
    this.outlet?.close();
  }
}

export interface Session {
  pair: SidPair;
  node: Party;
  app: Party;
  close(): void;
}

export interface OpenOptions {
  app: AppTransport;
  /** The node's connection, shared by several sessions; default: a connection of its own. */
  nodeStub?: HashMailStub;
  timeoutMs: number;
}

export async function openSession(target: Target, options: OpenOptions): Promise<Session> {
  const pair = newSidPair();
  const node = new Party();
  const app = new Party();
  const ownStubs: HashMailStub[] = [];
  const nodeStub = options.nodeStub ?? dialGrpc(target.grpcAddress);
  if (!options.nodeStub) ownStubs.push(nodeStub);
  const close = (): void => {
    node.close();
    app.close();
    for (const stub of ownStubs) stub.close();
  };
  try {
    await createBox(nodeStub, pair.c2s, options.timeoutMs);
    await createBox(nodeStub, pair.s2c, options.timeoutMs);
    node.inlet = new GrpcInlet(nodeStub, pair.c2s, node);
    node.outlet = new GrpcOutlet(nodeStub, pair.s2c, node);
    if (options.app === 'grpc') {
      // A mobile app is another machine: its own connection.
      const appStub = dialGrpc(target.grpcAddress);
      ownStubs.push(appStub);
      app.inlet = new GrpcInlet(appStub, pair.s2c, app);
      app.outlet = new GrpcOutlet(appStub, pair.c2s, app);
    } else {
      const [inlet, outlet] = await Promise.allSettled([
        WsInlet.open(target.wsPort, pair.s2c, app, options.timeoutMs),
        WsOutlet.open(target.wsPort, pair.c2s, app, options.timeoutMs),
      ]);
      // Keep whichever opened, so close() ends it if the other failed.
      if (inlet.status === 'fulfilled') app.inlet = inlet.value;
      if (outlet.status === 'fulfilled') app.outlet = outlet.value;
      if (inlet.status === 'rejected') throw inlet.reason;
      if (outlet.status === 'rejected') throw outlet.reason;
    }
    app.send(HELLO);
    await node.next(options.timeoutMs);
    node.send(HELLO);
    await app.next(options.timeoutMs);
  } catch (err) {
    close();
    throw err;
  }
  return { pair, node, app, close };
}

/** Dials on a source port some listener holds (bench/source-ports.ts) are retried on the next port, this many times in all. */
const PORT_TAKEN_RETRIES = 3;

export interface V2OpenOptions extends V2Shape {
  timeoutMs: number;
  /** The node's gRPC connection, shared by several sessions; default: a connection per party. */
  nodeStub?: MailboxV2Stub;
  /** Source address of WebSocket parties (127.x), when one address has too few ephemeral ports. */
  localAddress?: string;
  /** WebSocket parties ping the relay this often (ms), as the client library does; 0 or absent: never (as a browser). */
  clientPingMs?: number;
  /** A cluster: asks where the session's route lives (placing it) and opens both parties there instead of `target`. */
  lookup?: (route: string) => Promise<Target>;
}

/**
 * A v2 session: the node reads C2S (writing S2C = C2S ^ 1), the app reads
 * S2C; both attach at once (ATTACH_CREATE, either may come first), then one
 * message each way, so an open session is known to relay.
 */
export async function openV2Session(target: Target, o: V2OpenOptions): Promise<Session> {
  const pair = newSidPair();
  if (o.lookup) {
    const lookup = o.lookup;
    target = await lookup(routeOfSid(pair.s2c)).catch((err: unknown) => {
      throw new Error(`lookup: ${(err as Error).message}`);
    });
  }
  const node = new Party();
  const app = new Party();
  const close = (): void => {
    node.close();
    app.close();
  };
  const openWs = async (party: Party, sid: Buffer): Promise<WsV2Link> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await WsV2Link.open(target.wsPort, sid, party, o.timeoutMs, o.localAddress, o.clientPingMs);
      } catch (err) {
        if (!isPortTaken(err) || attempt === PORT_TAKEN_RETRIES) throw err;
      }
    }
  };
  const open = (party: Party, transport: V2Transport, sid: Buffer, stub?: MailboxV2Stub): Promise<GrpcV2Link | WsV2Link> =>
    transport === 'grpc' ? GrpcV2Link.open(target.grpcAddress, sid, party, o.timeoutMs, stub) : openWs(party, sid);
  try {
    const [n, a] = await Promise.allSettled([open(node, o.node, pair.c2s, o.nodeStub), open(app, o.app, pair.s2c)]);
    // Keep whichever opened, so close() ends it if the other failed.
    if (n.status === 'fulfilled') node.inlet = node.outlet = n.value;
    if (a.status === 'fulfilled') app.inlet = app.outlet = a.value;
    if (n.status === 'rejected') throw new Error(`node: ${(n.reason as Error).message}`);
    if (a.status === 'rejected') throw new Error(`app: ${(a.reason as Error).message}`);
    app.send(HELLO);
    await node.next(o.timeoutMs);
    node.send(HELLO);
    await app.next(o.timeoutMs);
  } catch (err) {
    close();
    throw err;
  }
  return { pair, node, app, close };
}
