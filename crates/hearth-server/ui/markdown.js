// Markdown to DOM nodes, built element by element (never through innerHTML, so a reply cannot
// inject markup): fenced code with light highlighting, headings, lists, quotes, paragraphs,
// and inline code, bold, italics and http(s) links.

import { el } from './app.js';

const KEYWORDS = new Set(('as async await break case catch class const continue def default del do elif else enum export extends false ' +
  'fn for from func function go if impl import in interface let loop match mod mut new nil none null or and not package pass pub ' +
  'raise return self static struct super switch this throw true try type use var void while with yield').split(' '));

/** Code as spans: comments, strings, numbers and keywords, each with a class. */
function highlight(code) {
  const out = [];
  const re = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/g;
  let last = 0;
  for (const m of code.matchAll(re)) {
    if (m.index > last) out.push(code.slice(last, m.index));
    const [text, comment, string, number, word] = m;
    if (comment) out.push(el('span', { class: 'tok-comment' }, text));
    else if (string) out.push(el('span', { class: 'tok-string' }, text));
    else if (number) out.push(el('span', { class: 'tok-number' }, text));
    else if (word && KEYWORDS.has(word)) out.push(el('span', { class: 'tok-keyword' }, text));
    else out.push(text);
    last = m.index + text.length;
  }
  out.push(code.slice(last));
  return out;
}

function inline(text) {
  const out = [];
  const re = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*|_[^_\s][^_]*_)|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const [all, code, bold, italic, label, href] = m;
    if (code) out.push(el('code', {}, code.slice(1, -1)));
    else if (bold) out.push(el('strong', {}, ...inline(bold.slice(2, -2))));
    else if (italic) out.push(el('em', {}, ...inline(italic.slice(1, -1))));
    else out.push(el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, label));
    last = m.index + all.length;
  }
  out.push(text.slice(last));
  return out;
}

/** The nodes of `source`; an unclosed code fence (a reply still streaming) renders as code. */
export function render(source) {
  const lines = source.split('\n');
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^```\s*([\w+-]*)/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].startsWith('```')) body.push(lines[i++]);
      i++;
      const code = el('code', { class: fence[1] ? `lang-${fence[1]}` : null }, ...highlight(body.join('\n')));
      const copy = el('button', { type: 'button', class: 'copy', onclick: () => navigator.clipboard?.writeText(body.join('\n')) }, 'Copy');
      blocks.push(el('div', { class: 'codeblock' }, copy, el('pre', {}, code)));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)/);
    if (heading) {
      blocks.push(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, ...inline(heading[2])));
      i++;
      continue;
    }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? 'ol' : 'ul');
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        list.append(el('li', {}, ...inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ''))));
        i++;
      }
      blocks.push(list);
      continue;
    }
    if (line.startsWith('>')) {
      const quote = [];
      while (i < lines.length && lines[i].startsWith('>')) quote.push(lines[i++].replace(/^>\s?/, ''));
      blocks.push(el('blockquote', {}, ...inline(quote.join(' '))));
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^(```|#{1,6}\s|>|\s*([-*+]|\d+[.)])\s)/.test(lines[i])) para.push(lines[i++]);
    const p = el('p');
    para.forEach((l, k) => { if (k) p.append(el('br')); p.append(...inline(l)); });
    blocks.push(p);
  }
  return blocks;
}
