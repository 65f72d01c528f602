/**
 * Every relative link of README.md and docs/*.md names a file or folder of
 * the repository, and every `#anchor` names a heading of the target (as
 * GitHub makes heading anchors). Links to the web are not fetched.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../helpers/server.js';

const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** The text outside fenced code blocks and inline code: links in examples are not links. */
function proseOf(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '');
}

/** Targets of `[text](target)` and `[text](target "title")`. */
function linkTargets(markdown: string): string[] {
  const prose = proseOf(markdown);
  return [...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]);
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2... */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const text = markdown.replace(/^```[\s\S]*?^```/gm, '');
  for (const m of text.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const slug = m[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

const isExternal = (target: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(target);

test('heading anchors as GitHub makes them', () => {
  const anchors = headingAnchors('# Client library\n### `hashmail serve`\n## What this library is, and is not\n## Errors\n## Errors\n```\n# not a heading\n```\n');
  assert.deepEqual([...anchors], ['client-library', 'hashmail-serve', 'what-this-library-is-and-is-not', 'errors', 'errors-1']);
});

test('link targets outside code', () => {
  assert.deepEqual(linkTargets('see [a](docs/a.md#x) and `[b](nope.md)`\n```\n[c](nope.md)\n```\n[d](<e f.md>) [g](h.md "title")'), ['docs/a.md#x', 'h.md']);
});

for (const doc of DOCS) {
  test(`${doc}: every relative link resolves inside the repository`, () => {
    const text = readFileSync(join(ROOT, doc), 'utf8');
    const broken: string[] = [];
    for (const target of linkTargets(text)) {
      if (isExternal(target)) continue;
      const hash = target.indexOf('#');
      const pathPart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
      const anchor = hash < 0 ? '' : target.slice(hash + 1);
      const file = pathPart === '' ? join(ROOT, doc) : join(ROOT, dirname(doc), pathPart);
      if (relative(ROOT, file).startsWith('..')) {
        broken.push(`${target} (outside the repository)`);
        continue;
      }
      if (!existsSync(file)) {
        broken.push(`${target} (no such file)`);
        continue;
      }
      if (anchor !== '' && statSync(file).isFile() && file.endsWith('.md') && !headingAnchors(readFileSync(file, 'utf8')).has(anchor)) {
        broken.push(`${target} (no heading #${anchor} in ${relative(ROOT, file)})`);
      }
    }
    assert.deepEqual(broken, [], `broken links in ${doc}`);
  });
}
