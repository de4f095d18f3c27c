// Knowledge: collections with their statistics; files (or a folder's files) uploaded by
// picking or dropping, each followed to its end; search with a mode, tag and type filters and
// highlights; questions answered with citations.

import { api, bytes, el, field, request, toast } from '../app.js';
import { highlighted } from './chat.js';

export async function render(main) {
  const collection = el('select', { id: 'kb-collection', 'aria-label': 'Collection' });
  const stats = el('div', { class: 'tiles', id: 'kb-stats' });
  const files = el('input', { type: 'file', id: 'kb-files', multiple: true, 'aria-label': 'Files to add' });
  const folder = el('input', { type: 'file', id: 'kb-folder', webkitdirectory: true, 'aria-label': 'A folder to add' });
  const uploads = el('ul', { class: 'uploads', id: 'kb-uploads' });
  const overall = el('progress', { id: 'kb-upload-progress', max: 1, value: 0, hidden: true });
  const overallLine = el('p', { id: 'kb-upload-status', class: 'muted', 'aria-live': 'polite' });
  const drop = el('div', { class: 'drop', tabindex: 0, role: 'button', 'aria-label': 'Drop files here, or press Enter to pick them' },
    'Drop files here or ', el('strong', {}, 'pick them'));
  const q = el('input', { type: 'search', id: 'kb-search', 'aria-label': 'Search', placeholder: 'Search' });
  const mode = el('select', { id: 'kb-search-mode', 'aria-label': 'Mode' }, ['hybrid', 'bm25', 'vector'].map((m) => el('option', { value: m }, m)));
  const tag = el('input', { id: 'kb-search-tag', 'aria-label': 'Only documents with this tag', placeholder: 'tag' });
  const kind = el('select', { id: 'kb-search-type', 'aria-label': 'Only documents of this type' },
    ['', 'text', 'markdown', 'html', 'pdf', 'docx', 'json'].map((t) => el('option', { value: t }, t || 'any type')));
  const hits = el('ol', { class: 'hits', id: 'kb-hits' });
  const question = el('input', { id: 'kb-question', 'aria-label': 'Question', placeholder: 'Ask a question' });
  const answer = el('div', { id: 'kb-answer', 'aria-live': 'polite' });
  const newName = el('input', { id: 'kb-new-collection', placeholder: 'new collection', 'aria-label': 'New collection name' });

  main.append(el('h1', {}, 'Knowledge'),
    el('div', { class: 'toolbar' }, field('Collection', collection), newName,
      el('button', { type: 'button', onclick: () => {
        const n = newName.value.trim();
        if (!n) return;
        collection.append(el('option', { value: n, selected: true }, n));
        newName.value = '';
        refresh();
      } }, 'Use')),
    stats,
    el('section', { class: 'card' }, el('h2', {}, 'Add documents'), drop, el('div', { class: 'row' }, files, folder), overall, overallLine, uploads),
    el('section', { class: 'card' }, el('h2', {}, 'Search'),
      el('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); search(); } }, q, mode, tag, kind, el('button', { type: 'submit' }, 'Search')), hits),
    el('section', { class: 'card' }, el('h2', {}, 'Ask'),
      el('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); ask(); } }, question, el('button', { type: 'submit' }, 'Ask')), answer));

  const coll = () => (collection.value ? `collection=${encodeURIComponent(collection.value)}` : '');

  async function refresh() {
    const s = await api(`/api/v1/stats?${coll()}`).catch((e) => { toast(e); return null; });
    if (!s) return;
    const tile = (label, value) => el('div', { class: 'tile' }, el('span', {}, label), el('strong', {}, String(value)));
    stats.replaceChildren(tile('Documents', s.total_documents), tile('Chunks', s.total_chunks), tile('Embedded', s.embedded_chunks), tile('Size', bytes(s.bytes)));
  }

  /** Adds the files two at a time (each is read, chunked and embedded by the server), with
   * each file's outcome and the whole batch's progress. */
  async function upload(list) {
    const all = [...list];
    let done = 0;
    overall.hidden = false;
    overall.value = 0;
    const tick = () => {
      overall.value = all.length ? done / all.length : 1;
      overallLine.textContent = `${done} of ${all.length} files`;
    };
    tick();
    const queue = [...all];
    const worker = async () => {
      for (let file = queue.shift(); file; file = queue.shift()) {
        await one(file);
        done++;
        tick();
      }
    };
    await Promise.all([worker(), worker()]);
    refresh();
  }

  async function one(file) {
    const item = el('li', {}, `${file.webkitRelativePath || file.name}: `, el('span', { class: 'spinner', 'aria-label': 'uploading' }));
    uploads.append(item);
    const form = new FormData();
    form.append('file', file, file.name);
    if (collection.value) form.append('collection', collection.value);
    try {
      const res = await request('/api/v1/content', { method: 'POST', body: form });
      const added = await res.json();
      item.lastChild.replaceWith(el('span', { class: 'ok' }, res.status === 201 ? `added (${added.chunks ?? '?'} chunks)` : 'unchanged'));
    } catch (e) {
      item.lastChild.replaceWith(el('span', { class: 'bad' }, e.message));
    }
  }

  files.addEventListener('change', () => upload(files.files));
  folder.addEventListener('change', () => upload(folder.files));
  drop.addEventListener('click', () => files.click());
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') files.click(); });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    // A dropped folder is an entry to walk, not a file: read its files, at any depth.
    const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
    upload(entries.length ? (await Promise.all(entries.map(filesOf))).flat() : e.dataTransfer.files);
  });

  /** The files under a dropped entry (a file, or a folder read to the end). */
  async function filesOf(entry) {
    if (entry.isFile) return [await new Promise((resolve, reject) => entry.file(resolve, reject))];
    const reader = entry.createReader();
    const children = [];
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      children.push(...batch);
    }
    return (await Promise.all(children.map(filesOf))).flat();
  }

  async function search() {
    if (!q.value.trim()) return;
    try {
      const filters = (tag.value.trim() ? `&tag=${encodeURIComponent(tag.value.trim())}` : '') + (kind.value ? `&content_type=${kind.value}` : '');
      const res = await api(`/api/v1/search?q=${encodeURIComponent(q.value)}&mode=${mode.value}&limit=10&${coll()}${filters}`);
      hits.replaceChildren(...res.results.map((h) => el('li', {},
        el('div', { class: 'hit-head' }, el('strong', {}, h.title || h.content_id), el('span', { class: 'score' }, h.score.toFixed(3))),
        el('p', {}, highlighted(h)))));
      if (!res.results.length) hits.append(el('li', { class: 'muted' }, 'Nothing found.'));
    } catch (e) { toast(e); }
  }

  async function ask() {
    if (!question.value.trim()) return;
    answer.replaceChildren(el('span', { class: 'spinner', 'aria-label': 'answering' }));
    try {
      const body = { question: question.value, limit: 4 };
      if (collection.value) body.collection = collection.value;
      const res = await api('/search/ask', { method: 'POST', body });
      const cited = new Set(res.citations.map((c) => c.n));
      answer.replaceChildren(el('p', {}, res.answer),
        el('ol', { class: 'sources' }, res.sources.map((s, i) => el('li', { class: cited.has(i + 1) ? 'cited' : '' },
          `${s.title || s.content_id}${cited.has(i + 1) ? ' (cited)' : ''}`))));
    } catch (e) { answer.replaceChildren(); toast(e); }
  }

  const health = await api('/api/v1/health').catch(() => ({ collections: [] }));
  collection.replaceChildren(el('option', { value: '' }, 'default'), ...health.collections.map((c) => el('option', { value: c }, c)));
  collection.addEventListener('change', refresh);
  await refresh();
}
