#!/usr/bin/env node
/**
 * `hashmail <command>`: dispatches to one module per subcommand. Every
 * command has --help; usage errors exit 2.
 */
import { HASHMAIL_VERSION } from '../observe/version.js';
import { tuneYoungGeneration } from './young-generation.js';

type Run = (argv: string[]) => Promise<number>;

/**
 * grpc-js names the server in TLS even when it is an IP address, which Node
 * warns about (DEP0123) on a pipe's stderr with --tls-skip-verify or --ca to
 * `1.2.3.4:443`: noise to a user, with nothing they can change. Every other
 * warning is printed as Node would.
 */
function hideTlsServerNameWarning(): void {
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => {
    if (warning.code === 'DEP0123') return;
    process.stderr.write(`(node:${process.pid}) ${warning.code ? `[${warning.code}] ` : ''}${warning.name}: ${warning.message}\n`);
  });
}

/**
 * Each command's module is imported only when it runs: a relay need not load
 * the client library, the QR code writer or the gateway, and its start (which
 * a restart after a crash waits for, under load) is that much shorter.
 */
const COMMANDS: Record<string, { summary: string; load(): Promise<Run>; server?: true }> = {
  serve: {
    server: true,
    summary: 'run relay + legacy gateway + in-memory directory in one process (the default way to run)',
    load: async () => (await import('./serve.js')).runServe,
  },
  relay: {
    server: true,
    summary: 'run one v2 relay of a cluster, registered in etcd (drains on SIGTERM)',
    load: async () => (await import('./relay.js')).runRelay,
  },
  gateway: {
    server: true,
    summary: 'run one gateway of a cluster: the legacy front door, each call carried to the owning relay',
    load: async () => (await import('./gateway.js')).runGateway,
  },
  status: {
    summary: 'the cluster: relays, gateways, addresses, load, draining, session counts, lease age, etcd health',
    load: async () => (await import('./status.js')).runStatus,
  },
  phrase: {
    summary: 'connection phrases: new (URL, words, QR), decode, qr (terminal, PNG, SVG), sid (the SID pair)',
    load: async () => (await import('./phrase.js')).runPhrase,
  },
  pipe: {
    summary: 'netcat for mailboxes: stdin -> sid^1, sid -> stdout, as a legacy party',
    load: async () => {
      hideTlsServerNameWarning();
      return (await import('./pipe.js')).runPipe;
    },
  },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `Usage: hashmail <command> [flags]\n\nCommands:\n${lines.join('\n')}\n  ${'version'.padEnd(8)} print the version (also --version)\n\nRun 'hashmail <command> --help' for the flags of a command.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === 'version' || name === '--version' || name === '-v') {
    process.stdout.write(`hashmail ${HASHMAIL_VERSION} (node ${process.version})\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`hashmail: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  // Before the command loads its modules (src/cli/young-generation.ts).
  if (command.server) tuneYoungGeneration();
  return (await command.load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`hashmail: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
