/**
 * Whether nothing listens at an instance's advertised address: one TCP
 * connection attempt, closed at once. Only a refusal (the host answered, no
 * process holds the port) counts as "nothing listens"; a timeout or any other
 * error may be the network between us and says nothing about the instance.
 */
import { connect } from 'node:net';
import { parseHostPort } from '../config/host-port.js';

export type ProbeAnswer = 'refused' | 'listening' | 'unknown';

export function probeListening(address: string, timeoutMs: number): Promise<ProbeAnswer> {
  let host: string;
  let port: number;
  try {
    ({ host, port } = parseHostPort(address, 'instance address'));
  } catch {
    return Promise.resolve('unknown');
  }
  return new Promise((resolve) => {
    // One attempt: with a hostname's addresses tried in turn, the error would name the first, refused or not.
    const socket = connect({ host, port, autoSelectFamily: false });
    const done = (answer: ProbeAnswer): void => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done('unknown'));
    socket.once('connect', () => done('listening'));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' ? 'refused' : 'unknown'));
  });
}
