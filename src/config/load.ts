/**
 * Builds the validated Config: schema defaults, then the config file (JSON),
 * then environment variables, then command-line flags. Validated once, at
 * start; a bad value stops the process with a message naming the key, where
 * it came from and the expected form.
 */
import { readFileSync } from 'node:fs';
import { configSchema, type Config } from './schema.js';
import { closestName } from './suggest.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Section = Record<string, unknown>;
type Layer = Record<string, Section>;

const ENV_PREFIX = 'HASHMAIL_';

/** `maxBoxesPerAddress` -> `MAX_BOXES_PER_ADDRESS`. */
function screamingSnake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** Environment variable of a key: `limits.maxBoxes` -> `HASHMAIL_LIMITS__MAX_BOXES`. */
export function envName(section: string, key: string): string {
  return `${ENV_PREFIX}${screamingSnake(section)}__${screamingSnake(key)}`;
}

/** Every key with its default, from the schema itself. */
export function configDefaults(): Config {
  return configSchema.parse({});
}

function readFileLayer(file: string): Layer {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config file ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${file}: expected a JSON object of sections`);
  }
  return parsed as Layer;
}

/** Env values are strings; the default's type says how to read them. */
function coerceEnv(name: string, raw: string, example: unknown): unknown {
  if (typeof example === 'number') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw new ConfigError(`${name}=${raw}: expected a number`);
    return n;
  }
  if (typeof example === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new ConfigError(`${name}=${raw}: expected true or false`);
  }
  if (Array.isArray(example)) return raw.split(',').map((s) => s.trim()).filter(Boolean);
  return raw;
}

function readEnvLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Layer = {};
  const defaults = configDefaults() as unknown as Layer;
  const known = new Set<string>();
  for (const [section, keys] of Object.entries(defaults)) {
    for (const [key, example] of Object.entries(keys)) {
      const name = envName(section, key);
      known.add(name);
      const raw = env[name];
      if (raw === undefined) continue;
      (layer[section] ??= {})[key] = coerceEnv(name, raw, example);
    }
  }
  for (const name of Object.keys(env)) {
    // HASHMAIL_TRACE is read by the logger, not a config key.
    if (name.startsWith(ENV_PREFIX) && name.includes('__') && !known.has(name)) {
      const near = closestName(name, known);
      throw new ConfigError(`${name}: unknown configuration variable${near ? `; did you mean ${near}?` : ''} (see docs/configuration.md)`);
    }
  }
  return layer;
}

function merge(base: Layer, over: Layer): Layer {
  const out: Layer = { ...base };
  for (const [section, keys] of Object.entries(over)) {
    const baseSection = out[section];
    out[section] =
      typeof keys === 'object' && keys !== null && !Array.isArray(keys) && typeof baseSection === 'object'
        ? { ...baseSection, ...keys }
        : keys;
  }
  return out;
}

export interface LoadOptions {
  /** Path of a JSON config file, or undefined for none. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags, highest precedence. */
  flags?: Layer;
}

/** `mailbox.bufferBytez: unknown key; did you mean `bufferBytes`?` (sections too). */
function unknownKeyLine(path: string[], key: string): string {
  const defaults = configDefaults() as unknown as Layer;
  const known = path.length === 0 ? Object.keys(defaults) : Object.keys(defaults[path[0]] ?? {});
  const near = closestName(key, known);
  const name = [...path, key].join('.');
  return `${name}: unknown ${path.length === 0 ? 'section' : 'key'}${near ? `; did you mean \`${near}\`?` : ''}`;
}

export function loadConfig(options: LoadOptions = {}): Config {
  let layer: Layer = {};
  if (options.file) layer = merge(layer, readFileLayer(options.file));
  layer = merge(layer, readEnvLayer(options.env ?? process.env));
  if (options.flags) layer = merge(layer, options.flags);
  const result = configSchema.safeParse(layer);
  if (!result.success) {
    const lines = result.error.issues.flatMap((issue) => {
      const key = issue.path.join('.') || '(top level)';
      if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `  ${unknownKeyLine(issue.path.map(String), k)}`);
      return [`  ${key}: ${issue.message}`];
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return result.data;
}
