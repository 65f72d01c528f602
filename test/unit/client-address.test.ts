import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { test } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { loadConfig } from '../../src/config/load.js';
import { ClientAddressPolicy, hostOfPeer, MAX_FORWARDED_HOPS, type ClientAddressOptions } from '../../src/transport/client-address.js';
import { formatIp, maskIp, parseCidr, parseIp } from '../../src/transport/ip-address.js';
import { encodeProxyV2Header, parseProxyHeader, PP2_TYPE_HOP_TOKEN } from '../../src/transport/proxy-protocol.js';

function policy(options: Partial<ClientAddressOptions> = {}): ClientAddressPolicy {
  return new ClientAddressPolicy({ trustProxy: true, clientAddressFrom: 'x-forwarded-for', trustedProxies: [], ipv6PrefixLength: 64, ...options });
}

function request(peer: string, xff?: string | string[]): IncomingMessage {
  return { socket: { remoteAddress: peer }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } } as unknown as IncomingMessage;
}

function grpcCall(peer: string, ...xff: string[]): { metadata: Metadata; getPeer(): string } {
  const metadata = new Metadata();
  for (const v of xff) metadata.add('x-forwarded-for', v);
  return { metadata, getPeer: () => peer };
}

test('ip: canonical text (RFC 5952), embedded IPv4, zone ids, mapped IPv4 as IPv4', () => {
  const canon = (s: string): string | null => {
    const ip = parseIp(s);
    return ip && formatIp(ip);
  };
  assert.equal(canon('10.1.2.3'), '10.1.2.3');
  assert.equal(canon('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  assert.equal(canon('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'first of two equal zero runs');
  assert.equal(canon('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1', 'the longest zero run');
  assert.equal(canon('2001:db8:1:1:1:1:0:1'), '2001:db8:1:1:1:1:0:1', 'a single zero group stays');
  assert.equal(canon('::'), '::');
  assert.equal(canon('::1'), '::1');
  assert.equal(canon('fe80::1%eth0'), 'fe80::1');
  assert.equal(canon('64:ff9b::1.2.3.4'), '64:ff9b::102:304');
  assert.equal(canon('::ffff:10.1.2.3'), '10.1.2.3');
  assert.equal(canon('0:0:0:0:0:ffff:a01:203'), '10.1.2.3');
  for (const bad of ['', 'unknown', '10.1.2', '10.1.2.3:80', '[::1]', '01.2.3.4', '1.2.3.256', '2001:db8::g', 'fe80::1%']) {
    assert.equal(parseIp(bad), null, bad);
  }
});

test('ip: masks and CIDRs', () => {
  const ip = parseIp('2001:db8:1:2:3:4:5:6')!;
  assert.equal(formatIp(maskIp(ip, 64)), '2001:db8:1:2::');
  assert.equal(formatIp(maskIp(ip, 56)), '2001:db8:1::');
  assert.equal(formatIp(maskIp(ip, 60)), '2001:db8:1::', 'a prefix inside a group');
  assert.equal(formatIp(maskIp(parseIp('2001:db8:1:ff::')!, 60)), '2001:db8:1:f0::');
  assert.equal(formatIp(maskIp(ip, 128)), '2001:db8:1:2:3:4:5:6');
  assert.equal(formatIp(maskIp(parseIp('10.1.2.3')!, 8)), '10.0.0.0');
  assert.deepEqual(parseCidr('10.0.0.0/8'), { ip: parseIp('10.0.0.0'), prefix: 8 });
  assert.equal(parseCidr('2001:db8::/32')?.prefix, 32);
  assert.equal(parseCidr('127.0.0.1')?.prefix, 32, 'a single address');
  assert.equal(parseCidr('::1')?.prefix, 128);
  for (const bad of ['10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', 'lb.example/8', 'fe80::%eth0/64', '10.0.0.0/0x8']) {
    assert.equal(parseCidr(bad), null, bad);
  }
});

test('limit key: IPv4 as is, mapped IPv4 as IPv4, IPv6 by its prefix, written canonically', () => {
  const p64 = policy();
  assert.equal(p64.limitKey('10.1.2.3'), '10.1.2.3');
  assert.equal(p64.limitKey('::ffff:10.1.2.3'), '10.1.2.3');
  assert.equal(p64.limitKey('2001:DB8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(p64.limitKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64', 'one /64, one key');
  assert.notEqual(p64.limitKey('2001:db8:1:3::1'), p64.limitKey('2001:db8:1:2::1'), 'another /64, another key');
  assert.equal(p64.limitKey('unknown'), 'unknown', 'no address: as given');
  assert.equal(policy({ ipv6PrefixLength: 48 }).limitKey('2001:db8:1:2::1'), '2001:db8:1::/48');
  assert.equal(policy({ ipv6PrefixLength: 56 }).limitKey('2001:db8:1:2ff::1'), '2001:db8:1:200::/56');
  const p128 = policy({ ipv6PrefixLength: 128 });
  assert.equal(p128.limitKey('2001:db8::1'), '2001:db8::1/128');
  assert.notEqual(p128.limitKey('2001:db8::1'), p128.limitKey('2001:db8::2'));
});

test('trusted proxies: CIDR matching for v4 and v6, mapped peers match IPv4 rules', () => {
  const p = policy({ trustedProxies: ['10.0.0.0/8', '192.168.1.7', '2001:db8:aa::/48', '::1'] });
  assert.ok(p.isTrusted('10.200.3.4'));
  assert.ok(p.isTrusted('::ffff:10.200.3.4'), 'a dual-stack socket writes IPv4 peers mapped');
  assert.ok(!p.isTrusted('11.0.0.1'));
  assert.ok(p.isTrusted('192.168.1.7'));
  assert.ok(!p.isTrusted('192.168.1.8'));
  assert.ok(p.isTrusted('2001:db8:aa:ffff::1'));
  assert.ok(!p.isTrusted('2001:db8:ab::1'));
  assert.ok(p.isTrusted('::1'));
  assert.ok(!p.isTrusted('unknown'));
  assert.throws(() => policy({ trustedProxies: ['10.0.0.0/8', 'balancer'] }), /server\.trustedProxies\[1\]: "balancer" is not an IP address or CIDR/);
});

test('x-forwarded-for: the rightmost hop that is not a trusted proxy, only from a trusted peer', () => {
  const p = policy({ trustedProxies: ['10.0.0.0/8', '2001:db8:aa::/48'] });
  // The client sent "1.1.1.1" itself; balancer 10.0.0.2 appended 203.0.113.9, then 10.0.0.1 appended 10.0.0.2.
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '1.1.1.1, 203.0.113.9, 10.0.0.2')), '203.0.113.9');
  assert.equal(p.ofHttpRequest(request('::ffff:10.0.0.1', '203.0.113.9')), '203.0.113.9', 'mapped peer');
  assert.equal(p.ofHttpRequest(request('2001:db8:aa::5', '1.1.1.1,2001:db8:aa::9, 2001:db8:aa::7')), '1.1.1.1');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', ['1.1.1.1', '203.0.113.9'])), '203.0.113.9', 'repeated headers, in order');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '203.0.113.9:4711')), '203.0.113.9', 'IPv4 with port');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '[2001:db8::9]:443')), '2001:db8::9', 'bracketed IPv6 with port');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '::ffff:203.0.113.9')), '203.0.113.9', 'mapped hop');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '2001:DB8::9')), '2001:db8::9', 'canonical');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '203.0.113.9,,  ,')), '203.0.113.9', 'empty entries skipped');
  // Not from a trusted peer: the header is the client's own text.
  assert.equal(p.ofHttpRequest(request('203.0.113.50', '1.2.3.4')), '203.0.113.50');
  assert.equal(p.ofHttpRequest(request('10.0.0.1')), '10.0.0.1', 'no header: the peer');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '10.0.0.9, 10.0.0.8')), '10.0.0.1', 'only trusted hops: the peer');
});

test('x-forwarded-for: malformed hops never become the address', () => {
  const p = policy({ trustedProxies: ['10.0.0.0/8'] });
  for (const value of ['unknown', 'evil', '1.2.3', '1.2.3.4.5', '[::1', '1.2.3.4:99999', '"1.2.3.4"', 'for=1.2.3.4', '2001:db8::1:80x']) {
    assert.equal(p.ofHttpRequest(request('10.0.0.1', value)), '10.0.0.1', value);
  }
  // A malformed hop breaks the chain: the spoofed 1.1.1.1 left of it is not believed.
  assert.equal(p.ofHttpRequest(request('10.0.0.1', '1.1.1.1, garbage, 10.0.0.2')), '10.0.0.1');
  // Malformed text left of the client's hop is the client's own and harmless.
  assert.equal(p.ofHttpRequest(request('10.0.0.1', 'garbage, 203.0.113.9')), '203.0.113.9');
  // A chain of trusted hops longer than the bound is not walked to its end.
  const long = [...Array<string>(MAX_FORWARDED_HOPS).fill('10.0.0.3'), '203.0.113.9'].reverse().join(',');
  assert.equal(p.ofHttpRequest(request('10.0.0.1', long)), '10.0.0.1');
});

test('gRPC: x-forwarded-for metadata the same way; the peer from getPeer()', () => {
  const p = policy({ trustedProxies: ['127.0.0.1/32', '::1'] });
  assert.equal(p.ofGrpcCall(grpcCall('127.0.0.1:40000', '1.1.1.1, 203.0.113.9')), '203.0.113.9');
  assert.equal(p.ofGrpcCall(grpcCall('127.0.0.1:40000', '1.1.1.1', '203.0.113.9')), '203.0.113.9', 'repeated metadata, in order');
  assert.equal(p.ofGrpcCall(grpcCall('::1:40000', '203.0.113.9')), '203.0.113.9', 'grpc-js writes IPv6 peers without brackets');
  assert.equal(p.ofGrpcCall(grpcCall('10.9.9.9:40000', '203.0.113.9')), '10.9.9.9', 'untrusted peer');
  assert.equal(p.limitKeyOfCall(grpcCall('127.0.0.1:1', '2001:db8:1:2::77')), '2001:db8:1:2::/64');
  assert.equal(hostOfPeer('ipv4:1.2.3.4:5'), '1.2.3.4');
  assert.equal(hostOfPeer('[2001:db8::1]:5'), '2001:db8::1');
  assert.equal(hostOfPeer('2001:db8::1:5'), '2001:db8::1');
  assert.equal(hostOfPeer('10.1.2.3'), '10.1.2.3', 'no port left');
  assert.equal(hostOfPeer('unknown'), 'unknown');
});

test('proxy-protocol mode: X-Forwarded-For is never read; PROXY headers from trusted peers only, when listed', () => {
  const any = policy({ clientAddressFrom: 'proxy-protocol' });
  assert.equal(any.ofHttpRequest(request('10.1.2.3', '1.1.1.1')), '10.1.2.3', 'an L4 balancer passes the client header through');
  assert.equal(any.ofGrpcCall(grpcCall('10.1.2.3:5', '1.1.1.1')), '10.1.2.3');
  assert.equal(any.proxyHeaderFrom('203.0.113.9'), 'believe', 'no list: any peer');
  const listed = policy({ clientAddressFrom: 'proxy-protocol', trustedProxies: ['10.0.0.0/8'] });
  assert.equal(listed.proxyHeaderFrom('10.0.0.1'), 'believe');
  assert.equal(listed.proxyHeaderFrom('::ffff:10.0.0.1'), 'believe');
  assert.equal(listed.proxyHeaderFrom('127.0.0.1'), 'refuse');
  assert.equal(listed.ofHttpRequest(request('10.0.0.1', '1.1.1.1')), '10.0.0.1', 'not even from a trusted peer');
});

test('x-forwarded-for mode refuses PROXY headers; trustProxy off reads neither source', () => {
  const xff = policy({ trustedProxies: ['127.0.0.1'] });
  assert.equal(xff.proxyHeaderFrom('127.0.0.1'), 'refuse');
  assert.equal(xff.proxyHeaderFrom('203.0.113.9'), 'refuse');
  for (const from of ['proxy-protocol', 'x-forwarded-for'] as const) {
    const off = policy({ trustProxy: false, clientAddressFrom: from, trustedProxies: ['127.0.0.1'] });
    assert.equal(off.proxyHeaderFrom('127.0.0.1'), 'off');
    assert.equal(off.ofHttpRequest(request('127.0.0.1', '203.0.113.9')), '127.0.0.1');
    assert.equal(off.ofGrpcCall(grpcCall('127.0.0.1:5', '203.0.113.9')), '127.0.0.1');
  }
});

test('config: each trustedProxies entry is checked at start, naming the key; flags and environment lists', () => {
  assert.throws(
    () => loadConfig({ env: {}, flags: { server: { trustedProxies: ['10.0.0.0/8', '10.0.0.0/40', 'lb.internal'] } } }),
    (err: Error) => {
      assert.match(err.message, /server\.trustedProxies\.1: "10\.0\.0\.0\/40" is not an IP address or CIDR/);
      assert.match(err.message, /server\.trustedProxies\.2: "lb\.internal" is not an IP address or CIDR/);
      return true;
    },
  );
  assert.throws(() => loadConfig({ env: {}, flags: { server: { trustProxy: true, clientAddressFrom: 'x-forwarded-for' } } }), /server\.trustedProxies: x-forwarded-for needs/);
  const c = loadConfig({ env: { HASHMAIL_SERVER__TRUSTED_PROXIES: '10.0.0.0/8, 2001:db8::/32' } });
  assert.deepEqual(c.server.trustedProxies, ['10.0.0.0/8', '2001:db8::/32']);
  assert.equal(c.limits.ipv6PrefixLength, 64);
});

test('PROXY v1: the source must be an address of the family the line names', () => {
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP4 10.1.2.3 10.0.0.1 4000 443\r\n')), { kind: 'header', address: '10.1.2.3', length: 39, hopToken: null, hopProof: null });
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 evil 10.0.0.1 4000 443\r\n')).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 2001:db8::1 10.0.0.1 4000 443\r\n')).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 ::1 4000 443\r\n')).kind, 'header');
});

test('PROXY v2 with TLVs: naming a client (IPv4, IPv6) or nobody (LOCAL), a hop token TLV (gateways of earlier releases) read back whole', () => {
  const token = 'a-hop-token-of-the-cluster-ünïcode';
  for (const client of ['10.1.2.3', '2001:db8::7', null]) {
    const header = encodeProxyV2Header(client, [[PP2_TYPE_HOP_TOKEN, Buffer.from(token)]]);
    const parsed = parseProxyHeader(Buffer.concat([header, Buffer.from('GET / HTTP/1.1\r\n')]));
    assert.deepEqual(parsed, { kind: 'header', address: client, length: header.length, hopToken: token, hopProof: null }, String(client));
    // Cut anywhere before its end, the header asks for more bytes.
    for (const cut of [1, 12, 16, header.length - 1]) assert.equal(parseProxyHeader(header.subarray(0, cut)).kind, 'more', `${String(client)} cut at ${cut}`);
  }
  assert.throws(() => encodeProxyV2Header('not-an-ip', []), /by IP address/);
  // A balancer's v2 header without TLVs: no token, no proof.
  assert.deepEqual(parseProxyHeader(encodeProxyV2Header('10.1.2.3', [])), { kind: 'header', address: '10.1.2.3', length: 28, hopToken: null, hopProof: null });
});

test('PROXY v2: a TLV running past the header, or an address block longer than the header, is invalid', () => {
  const header = encodeProxyV2Header('10.1.2.3', [[PP2_TYPE_HOP_TOKEN, Buffer.from('token')]]);
  const overrun = Buffer.from(header);
  overrun.writeUInt16BE(100, 29); // the TLV claims 100 bytes
  assert.equal(parseProxyHeader(overrun).kind, 'invalid');
  const short = Buffer.from(header.subarray(0, 20));
  short.writeUInt16BE(4, 14); // an IPv4 block needs 12 bytes
  assert.equal(parseProxyHeader(short).kind, 'invalid');
});
