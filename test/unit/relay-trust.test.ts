/**
 * RelayTrust (src/gateway/relay-trust.ts): hop.caFile first; else a relay's
 * self-signed certificate as registered (the newest record naming the
 * address); else the system's CAs.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { InstanceRecord } from '../../src/directory/directory.js';
import { RelayTrust } from '../../src/gateway/relay-trust.js';
import { loadTlsMaterial } from '../../src/transport/tls-material.js';

function record(id: string, address: string, startedAt: number, tlsCertificate?: string): InstanceRecord {
  return { id, role: 'relay', address, addresses: [address], load: { sessions: 0, connections: 0 }, draining: false, version: 'test', startedAt, ...(tlsCertificate ? { tlsCertificate } : {}) };
}

test('hop.caFile wins; else the newest record\'s self-signed certificate is pinned; else nothing (the system CAs); garbage is not pinned', (t) => {
  const dirs = [mkdtempSync(join(tmpdir(), 'hashmail-trust-a-')), mkdtempSync(join(tmpdir(), 'hashmail-trust-b-'))];
  t.after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const [older, newer] = dirs.map((dataDir) => loadTlsMaterial({ certFile: '', keyFile: '', dataDir }).cert.toString('utf8'));
  const records = [record('relay-a', '10.0.0.1:8443', 1, older), record('relay-a', '10.0.0.1:8443', 2, newer), record('relay-b', '10.0.0.2:8443', 1, 'not a certificate'), record('relay-c', '10.0.0.3:8443', 1)];
  const registry = { instances: () => records };

  const pinned = new RelayTrust(null, registry).optionsFor('10.0.0.1:8443');
  assert.equal(pinned.ca?.toString('utf8'), newer, 'the newest record of the address');
  assert.equal(pinned.checkServerIdentity?.(), undefined);
  assert.ok(pinned.checkServerIdentity, 'pinned: the name is not checked');
  assert.deepEqual(new RelayTrust(null, registry).optionsFor('10.0.0.2:8443'), {}, 'garbage is not pinned');
  assert.deepEqual(new RelayTrust(null, registry).optionsFor('10.0.0.3:8443'), {}, 'no certificate registered');
  const ca = Buffer.from('the operator CA');
  assert.deepEqual(new RelayTrust(ca, registry).optionsFor('10.0.0.1:8443'), { ca });
});
