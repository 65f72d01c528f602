/**
 * Every configuration key, its default, unit and meaning, in one place. The
 * schema is the documentation's source: docs/configuration.md and
 * config/hashmail.json are checked against it by test/unit/config.test.ts.
 * Defaults are sized for a 2-core / 24 GiB machine.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

const MiB = 1024 * 1024;

/** `HOST:PORT`, `[v6]:PORT`; port 0 picks a free port (tests). */
export const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'port must be 0..65535');

/** `10.0.0.0/8`, `2001:db8::/32` or a single address, v4 or v6 (no zone id). */
function isIpOrCidr(text: string): boolean {
  const [address, prefix, ...rest] = text.split('/');
  const family = isIP(address);
  if (family === 0 || address.includes('%') || rest.length > 0) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
}

const ms = (def: number, what: string) => z.number().int().default(def).describe(`${what} (milliseconds)`);
const count = (def: number, what: string) => z.number().int().positive().default(def).describe(what);

export const configSchema = z
  .object({
    server: z
      .object({
        listen: hostPort.default('0.0.0.0:8443').describe('Public listener: gRPC (HTTP/2) and REST/WebSocket (HTTP/1.1) on one port'),
        adminListen: hostPort.default('127.0.0.1:9090').describe('Admin listener: /healthz, /readyz, /metrics. Keep it private'),
        insecure: z.boolean().default(false).describe('Plain text (h2c with prior knowledge + HTTP/1.1) instead of TLS, e.g. behind a TLS-terminating balancer'),
        dataDir: z.string().min(1).default('.data').describe('Directory for state that outlives a restart: the generated self-signed certificate; a relay\'s or gateway\'s id and lease ids in <dataDir>/<role>-<host>-<port> after its listen address (<dataDir>/id-<instanceId> when given an id)'),
        tlsCertFile: z.string().default('').describe('PEM certificate chain; empty: a self-signed certificate is generated once in dataDir'),
        tlsKeyFile: z.string().default('').describe('PEM private key for tlsCertFile'),
        trustProxy: z.boolean().default(false).describe('A balancer is in front: take the client address (for per-address limits) from it, from the one source clientAddressFrom names'),
        clientAddressFrom: z
          .enum(['proxy-protocol', 'x-forwarded-for'])
          .default('proxy-protocol')
          .describe('With trustProxy, where the client address comes from: the PROXY protocol v1/v2 header (an L4 balancer; X-Forwarded-For is then ignored) or X-Forwarded-For / gRPC x-forwarded-for metadata sent by one of trustedProxies (an L7 balancer; PROXY headers are then refused)'),
        trustedProxies: z
          .array(z.string())
          .default([])
          .describe('Balancer addresses (IPs or CIDRs, v4 or v6) whose PROXY header or X-Forwarded-For is believed. Required for x-forwarded-for; for proxy-protocol, empty means any peer may send a PROXY header (only safe when nothing but the balancer reaches the port). Environment: comma-separated'),
        tlsHandshakeTimeoutMs: z.number().int().positive().default(10_000).describe('A TLS handshake not finished within this is dropped (milliseconds)'),
        shutdownGraceMs: ms(5000, 'How long SIGTERM waits for connections to close after ending every stream'),
      })
      .strict()
      .prefault({}),
    mailbox: z
      .object({
        bufferBytes: z.number().int().min(0).max(64 * MiB).default(64 * 1024).describe('Bytes a box holds for an absent or slow reader before the writer is pushed back (flow control). At least 64 KiB for legacy clients'),
        maxMessageBytes: z.number().int().positive().max(64 * MiB).default(4 * MiB).describe('Largest message (payload bytes); larger ones fail with RESOURCE_EXHAUSTED'),
        rateLimitIntervalMs: ms(20, 'Per-box token bucket: one token per message is earned every this often; 0 disables the limit'),
        rateLimitBurst: count(1000, 'Per-box token bucket size (messages); the bucket starts full'),
        staleTimeoutMs: ms(3_600_000, 'A box with neither slot taken is torn down after this long, counted from creation; negative disables'),
        acquireWaitMs: z.number().int().min(0).default(250).describe('How long a caller waits for a taken read/write slot before "stream occupied" (milliseconds)'),
      })
      .strict()
      .prefault({}),
    v2: z
      .object({
        enabled: z.boolean().default(true).describe('Serve protocol v2 (gRPC hashmail.v2.Mailbox and WebSocket /v2/mailbox) next to v1; false answers v2 with UNIMPLEMENTED / 404 as a v1-only server does'),
        windowBytes: z.number().int().min(1024).max(16 * MiB).default(64 * 1024).describe('Bytes the relay holds per direction of a v2 session for a reader that is absent or slow; then the writer is held back by flow control (bytes)'),
        maxMessageBytes: z.number().int().positive().max(16 * MiB).default(64 * 1024).describe('Largest v2 payload (bytes), announced to clients in the Welcome; a larger one ends the stream with an Error frame RESOURCE_EXHAUSTED "message too large"'),
        pingIntervalMs: z.number().int().min(0).default(15_000).describe('WebSocket ping interval on v2 sockets: a socket that showed no life this long is pinged; 0 disables pings. gRPC connections use grpc.keepaliveTimeMs (milliseconds)'),
        pingTimeoutMs: z.number().int().min(0).default(10_000).describe('Drop a v2 WebSocket that sent nothing (pong or data) this long after a ping, freeing its session slots; 0 never drops. gRPC: grpc.keepaliveTimeoutMs (milliseconds)'),
        creatorWaitMs: z.number().int().min(0).max(30_000).default(2000).describe('Cluster relays: a party attaching with ATTACH_EXISTING to a session placed on this relay less than this long ago, before the party that creates it arrived (both re-joining after a relay death), waits up to this long for it instead of getting "stream not found" at once (milliseconds); 0: answer at once. A single node never waits'),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        headersTimeoutMs: z.number().int().positive().default(10_000).describe('An HTTP/1.1 request (or WebSocket upgrade) must send its whole header block within this of its first byte, or of the connection opening (milliseconds)'),
        requestTimeoutMs: z.number().int().positive().default(30_000).describe('The body of a non-streaming HTTP/1.1 request (box create/delete) must arrive in full within this (milliseconds)'),
        idleTimeoutMs: z.number().int().positive().default(60_000).describe('A kept-alive HTTP/1.1 connection with no request in progress is closed after this (milliseconds)'),
      })
      .strict()
      .prefault({}),
    websocket: z
      .object({
        pingIntervalMs: z.number().int().min(0).default(30_000).describe('Server ping ("are you there?") interval; 0 disables pings (milliseconds)'),
        pongTimeoutMs: z.number().int().min(0).default(15_000).describe('Drop a connection that sent nothing (pong or data) this long after a ping; 0 never drops (milliseconds)'),
      })
      .strict()
      .prefault({}),
    grpc: z
      .object({
        keepaliveTimeMs: z.number().int().min(1000).default(120_000).describe('Server keepalive ping interval on idle connections (milliseconds)'),
        keepaliveTimeoutMs: z.number().int().min(1000).default(20_000).describe('Close a connection whose keepalive ping is not answered within this (milliseconds)'),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxBoxes: count(1_000_000, 'Boxes (SIDs) in total; about 2 per LNC connection'),
        maxBoxesPerAddress: count(2_000, 'Boxes created from one client address (the legacy protocol lets anyone create boxes); also the route lookups one address may have held at once (directory.lookupWaitMaxMs; past it they are answered at once)'),
        maxConnectionsPerAddress: count(2_000, 'Open TCP connections from one client address'),
        maxStreamsPerConnection: count(1_000, 'Concurrent HTTP/2 streams (gRPC calls) on one connection'),
        maxBufferedBytes: z.number().int().positive().default(4096 * MiB).describe('Bytes held for readers across the process: queued in boxes, or handed to a reader\'s transport and not yet flushed; never exceeded: past it writers wait (bytes)'),
        maxBufferedBytesPerAddress: z.number().int().positive().default(128 * MiB).describe('The same, across the boxes one client address created, so one client cannot take the whole process budget; past it that client\'s writers wait (bytes)'),
        maxConnections: count(200_000, 'Open connections in total on the public listener'),
        ipv6PrefixLength: z.number().int().min(1).max(128).default(64).describe('Per-address limits count an IPv6 client by this prefix (bits): one /64 is one address, as one host usually owns a whole /64'),
      })
      .strict()
      .prefault({}),
    directory: z
      .object({
        backend: z.enum(['memory', 'etcd']).default('memory').describe('memory: this process is the whole cluster (hashmail serve); etcd: the cluster directory in etcd (hashmail relay and gateway always use etcd)'),
        etcdEndpoints: z.array(z.string().url()).default(['http://127.0.0.1:2379']).describe('etcd client URLs (http:// or https://). Environment: comma-separated'),
        etcdUsername: z.string().default('').describe('etcd user (auth enabled); empty: no auth'),
        etcdPassword: z.string().default('').describe('Password of etcdUsername'),
        etcdCaFile: z.string().default('').describe('PEM CA that signs the etcd servers\' certificates (https:// endpoints); empty: the system CAs'),
        etcdCertFile: z.string().default('').describe('PEM client certificate for etcd mutual TLS; empty: none'),
        etcdKeyFile: z.string().default('').describe('PEM private key of etcdCertFile'),
        prefix: z.string().min(1).default('/hashmail/').describe('Key prefix of everything hashmail keeps in etcd (instances, session map)'),
        leaseTtlMs: z.number().int().min(2000).default(10_000).describe('Lease TTL of an instance and of its sessions: a dead instance\'s sessions are placed again this long after its last keepalive (milliseconds)'),
        callTimeoutMs: z.number().int().positive().default(2000).describe('Deadline of every etcd call; past it the call fails as "directory unavailable" (milliseconds). A call every try of which was refused (no member listening) fails sooner, after 4 refusals per endpoint'),
        maxTxnsInFlight: count(64, 'etcd transactions (placements) in flight per process; new mappings that find every slot busy wait, and the next free slot sends up to 128 of them as one transaction; one still waiting after callTimeoutMs fails with UNAVAILABLE'),
        maxPlacementsPerSecond: z
          .number()
          .int()
          .min(0)
          .default(2000)
          .describe('Placements (new session mappings, one etcd transaction each) per second per process, a burst of one second\'s worth passing at once; past it a placement waits its turn up to placementQueueMs, else fails with UNAVAILABLE "directory unavailable", which legacy clients retry on their next re-dial. Absorbs the reconnect storm after a relay death; 0: uncapped. memory backend: not capped (no etcd write)'),
        maxPlacementShare: z
          .number()
          .min(0)
          .max(1)
          .default(0.1)
          .describe('The share of maxPlacementsPerSecond one client address (its per-address limit key) may take before its placements may wait only half of placementQueueMs, the other half being kept for the addresses within theirs: one client creating sessions as fast as it can cannot keep every other client\'s new sessions refused. Every placement counts, at most 10 s of them; one address alone still gets the whole rate. An address within its share that finds the queue full takes the latest queued turn of the address waiting for the most turns (so many addresses each within theirs cannot fill it either). 0: off'),
        revokeRefusingOwners: z
          .boolean()
          .default(true)
          .describe('When a party reports that it could not reach the relay owning its session (a held lookup naming it), or a gateway\'s call to that relay fails, try that relay\'s first advertised address from here (at most once every 2 s per registration); if the connection is refused (nothing listens: killed, crashed, not back yet after a restart) and the relay has missed its keepalives (its lease has under two thirds of leaseTtlMs left, less 1 s; a live relay renews every third), revoke its leases, so its sessions move then instead of when the leases expire. A relay that accepts the connection, does not answer, keeps renewing its lease (a warning then says its address refuses) or is draining keeps them'),
        placementQueueMs: z.number().int().min(0).default(1000).describe('How long a placement over maxPlacementsPerSecond may wait for its turn; one that would wait longer (or past callTimeoutMs) fails at once with UNAVAILABLE, so the queue never holds more than this much of the rate (milliseconds)'),
        lookupWaitMaxMs: z
          .number()
          .int()
          .min(0)
          .max(120_000)
          .default(15_000)
          .describe('Longest a lookup that asks to wait (a party that could not reach the relay it was given, or was told "not placed") is held for the answer to change before the same answer is given (milliseconds); 0: always answer at once. Keep it above leaseTtlMs: a dead relay\'s parties then hold one lookup each until its lease expires, instead of asking again while the wave of re-joins runs'),
        maxWaitingLookups: count(100_000, 'Lookups held waiting for their answer to change, per process; past it a lookup is answered at once'),
        releaseIdleMappingsMs: ms(
          60_000,
          'A relay deletes its mapping of a session it no longer holds (the last box gone, or placed and never attached) this long after; the session is placed anew if it comes back. Keeps etcd and every cache to the sessions that exist. 0: never (a mapping then lives as long as its relay)',
        ),
        keysPerLease: count(1000, 'Session mappings bound to one lease before an instance opens another (etcd slows down as one lease holds more keys)'),
        loadPublishIntervalMs: z.number().int().positive().default(2000).describe('How often an instance publishes its load (sessions, connections) for load-aware placement (milliseconds)'),
        placement: z.enum(['load-aware', 'random']).default('load-aware').describe('Where new sessions go: load-aware (power of two choices on the load of each relay: the session mappings naming it in the view of this process, never below the sessions it published, plus placements to it in flight here) or random; draining instances are never chosen'),
      })
      .strict()
      .prefault({}),
    relay: z
      .object({
        instanceId: z.string().regex(/^[A-Za-z0-9._-]{0,64}$/, 'letters, digits, . _ - only (at most 64)').default('').describe('This relay\'s (or gateway\'s) id in the cluster; empty: a random id (relay-<hex>, gateway-<hex>) kept in server.dataDir (per listen address), so a restart keeps its id'),
        advertise: z.array(hostPort).default([]).describe('HOST:PORT clients dial to reach this relay, or a gateway for WebSocket clients (first one is given out); empty: server.listen when it names a concrete host. Environment: comma-separated'),
        drainDeadlineMs: z.number().int().min(0).default(30_000).describe('SIGTERM on a relay: how long it waits for its parties to move before it exits (milliseconds)'),
        drainSpreadMs: z.number().int().min(0).default(2000).describe('SIGTERM on a relay: its sessions are told to move at random moments over this window, both parties of a session together (milliseconds)'),
      })
      .strict()
      .prefault({}),
    hop: z
      .object({
        tokenFile: z.string().default('').describe('File holding the gateway -> relay hop token (the cluster secret every relay and gateway must share; whitespace around it is trimmed, at least 32 characters); empty: the token in etcd at <directory.prefix>cluster/hop-token, created by the first instance. Set it on every instance or on none'),
        caFile: z.string().default('').describe('Gateway: PEM CA that signs the relays\' certificates, to dial them over TLS (the name dialed is checked); empty: a relay\'s self-signed certificate as registered in the directory, else the system CAs. Unused with --insecure (plain-text hop)'),
        streamsPerConnection: count(1000, 'Gateway: legacy halves and box calls carried at once on one hop connection (lane) to a relay; past it the pool opens another connection'),
        maxConnectionsPerRelay: count(64, 'Gateway: hop connections (lanes) to one relay; a call past hop.streamsPerConnection on every one of them fails at once with RESOURCE_EXHAUSTED, never queued'),
        idleConnectionMs: z.number().int().positive().default(60_000).describe('Gateway: a hop connection that carried no call for this long is closed (milliseconds)'),
        windowBytes: z.number().int().min(1024).default(262_144).describe('Credit of each legacy half carried on a hop lane (bytes, each message counting 64 more): a relay sends a gateway a reader\'s messages at most this far ahead of what the legacy client took, and a gateway writes at most this far ahead of what the relay\'s box took (the relay sets it for writers, the gateway for readers). Memory per busy half on each side; an idle half holds none'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        sessionRateWindowMs: z.number().int().min(1000).default(60_000).describe('Window over which session read rates are measured for the active/standby/inuse gauges (milliseconds)'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info').describe('Log level'),
        format: z.enum(['auto', 'json', 'pretty']).default('auto').describe('json, pretty, or auto (pretty on a terminal, json otherwise)'),
        refusalLogIntervalMs: z.number().int().positive().default(1_000).describe('Refusals by a limit, and bad requests (malformed input, wrong sizes), are logged at most once per this interval and limit or error code, as one warn line with the count since the last one; each bad request is also logged at debug (milliseconds)'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    c.server.trustedProxies.forEach((entry, i) => {
      if (!isIpOrCidr(entry)) {
        ctx.addIssue({ code: 'custom', path: ['server', 'trustedProxies', i], message: `"${entry.slice(0, 64)}" is not an IP address or CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32` });
      }
    });
    if (c.server.trustProxy && c.server.clientAddressFrom === 'x-forwarded-for' && c.server.trustedProxies.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['server', 'trustedProxies'], message: 'x-forwarded-for needs the balancer addresses it may come from' });
    }
    for (const key of ['maxBufferedBytes', 'maxBufferedBytesPerAddress'] as const) {
      if (c.limits[key] < Math.max(c.mailbox.maxMessageBytes, c.v2.maxMessageBytes) * 2) {
        ctx.addIssue({ code: 'custom', path: ['limits', key], message: 'must hold at least two of the largest messages (mailbox.maxMessageBytes, v2.maxMessageBytes)' });
      }
    }
  });

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
