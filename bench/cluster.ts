/**
 * The cluster phases of `npm run bench` (issue 8), each its own script run
 * as a child process (each starts and stops its own etcd and relays):
 *   cluster-directory: bench/directory-latency.ts (lookup and placement latency)
 *   cluster-balance:   bench/placement-balance.ts (max/mean sessions per relay, random vs load-aware)
 *   cluster-rejoin:    bench/rejoin.ts (relay death to both parties re-joined, 1 and 2,000 sessions)
 *   cluster-scale:     bench/cluster-scale.ts (100,000 idle v2 sessions over 12 relays; about 15 minutes)
 * They run only when named (`npm run bench -- --only=cluster`): together they
 * take longer than the rest of the run. The gateway phases (issue 9,
 * bench/gateway.ts: cost, memory, storm) run the same way.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { track } from './children.js';
import { ROOT } from './server-process.js';

export const CLUSTER_PHASES = ['cluster-directory', 'cluster-balance', 'cluster-rejoin', 'cluster-scale'] as const;
/** Issue 9 (bench/gateway.ts), also only when named: `--only=gateway` runs the three. */
export const GATEWAY_PHASES = ['gateway-cost', 'gateway-memory', 'gateway-storm'] as const;
export type ClusterPhase = (typeof CLUSTER_PHASES)[number] | (typeof GATEWAY_PHASES)[number];

const SCRIPTS: Record<ClusterPhase, { file: string; title: string; args?: string[] }> = {
  'cluster-directory': { file: 'bench/directory-latency.ts', title: 'Directory lookup latency (local etcd)' },
  'cluster-balance': { file: 'bench/placement-balance.ts', title: 'Placement balance: random against load-aware' },
  'cluster-rejoin': { file: 'bench/rejoin.ts', title: 'Re-join after a relay is killed' },
  'cluster-scale': { file: 'bench/cluster-scale.ts', title: '100,000 idle v2 sessions over a cluster on this machine' },
  'gateway-cost': { file: 'bench/gateway.ts', title: 'Gateway cost: latency and throughput against serve and the relay direct', args: ['--part', 'cost'] },
  'gateway-memory': { file: 'bench/gateway.ts', title: 'Memory per idle legacy session: gateway + relay against serve', args: ['--part', 'memory'] },
  'gateway-storm': { file: 'bench/gateway.ts', title: 'Reconnect storm: the relay killed, legacy clients re-dialling every 2 s', args: ['--part', 'storm'] },
};

/** Runs one phase's script; resolves its markdown (stdout), rejects on a non-zero exit. */
export function runClusterPhase(phase: ClusterPhase): Promise<string> {
  const { file, title, args = [] } = SCRIPTS[phase];
  return new Promise((resolve, reject) => {
    const child = track(spawn(process.execPath, ['--import', 'tsx', join(ROOT, file), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] }));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(`## ${title}\n\n${file.endsWith('directory-latency.ts') ? `\`node --import tsx ${file}\`\n\n\`\`\`\n${out.trim()}\n\`\`\`\n` : out}\n`);
      else reject(new Error(`${file} exited with ${code ?? signal}`));
    });
  });
}
