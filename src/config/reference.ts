/**
 * Renders the configuration reference (docs/configuration.md) from the
 * schema, so the documentation cannot drift from what is validated.
 * `npm run docs:config` rewrites the file; a unit test checks it is current.
 */
import type { z } from 'zod';
import { configDefaults, envName } from './load.js';
import { configSchema } from './schema.js';

interface KeyDoc {
  key: string;
  env: string;
  default: unknown;
  description: string;
}

type AnyZod = z.ZodType & { description?: string; def: { innerType?: AnyZod; shape?: Record<string, AnyZod> } };

function objectShape(schema: AnyZod): Record<string, AnyZod> {
  let s: AnyZod = schema;
  while (s.def.innerType) s = s.def.innerType;
  return (s as unknown as { shape: Record<string, AnyZod> }).shape;
}

export function configKeys(): KeyDoc[] {
  const defaults = configDefaults() as unknown as Record<string, Record<string, unknown>>;
  const out: KeyDoc[] = [];
  for (const [section, sectionSchema] of Object.entries(configSchema.shape)) {
    for (const [key, keySchema] of Object.entries(objectShape(sectionSchema as unknown as AnyZod))) {
      out.push({ key: `${section}.${key}`, env: envName(section, key), default: defaults[section][key], description: keySchema.description ?? '' });
    }
  }
  return out;
}

export function renderConfigReference(): string {
  const rows = configKeys().map((k) => `| \`${k.key}\` | \`${JSON.stringify(k.default)}\` | \`${k.env}\` | ${k.description.replace(/\|/g, '\\|')} |`);
  return [
    '# Configuration reference',
    '',
    'Generated from `src/config/schema.ts` by `npm run docs:config`; do not edit by hand.',
    '',
    'Precedence, lowest to highest: schema defaults, the JSON file given with `--config`',
    '(`config/hashmail.json` holds every key at its default), environment variables, command-line flags.',
    'Every value is validated at start; a bad one stops the process with a message naming the key.',
    'Unknown keys (in the file or as `HASHMAIL_*__*` variables) are errors too.',
    '',
    '| key | default | environment variable | meaning |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
