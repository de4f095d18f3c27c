// Models: what is in the store (format, quantisation, size, disk used) and what else the
// server can run, the catalogue, pulling a model from the Hub by repo id or alias with a live
// progress bar (bytes, speed, ETA; an interrupted pull resumes), and deleting a stored one.

import { api, bytes, el, field, navigate, readEvents, request, toast } from '../app.js';

export async function render(main) {
  const list = el('tbody', { id: 'model-rows' });
  const repo = el('input', { id: 'pull-repo', placeholder: 'HuggingFaceTB/SmolLM2-135M-Instruct', required: true });
  const progress = el('progress', { id: 'pull-progress', max: 1, value: 0, hidden: true });
  const line = el('p', { id: 'pull-status', class: 'muted', 'aria-live': 'polite' });
  const pull = el('form', { class: 'card', onsubmit: (e) => { e.preventDefault(); start(); } },
    el('h2', {}, 'Pull a model'), field('Repo id (optionally @revision or :QUANT)', repo), el('button', { type: 'submit' }, 'Pull'), progress, line);
  const usage = el('p', { id: 'store-usage', class: 'muted' });
  const served = el('tbody', { id: 'served-rows' });
  const catalogue = el('tbody', { id: 'catalogue-rows' });
  main.append(el('h1', {}, 'Models'), pull,
    el('h2', {}, 'In the store'), usage,
    el('table', { class: 'rows' }, el('thead', {}, el('tr', {}, ['Model', 'Format', 'Quantisation', 'Size', 'Context', ''].map((h) => el('th', {}, h)))), list),
    el('h2', {}, 'What this server runs'),
    el('table', { class: 'rows' }, el('thead', {}, el('tr', {}, el('th', {}, 'Model'), el('th', {}, 'Loaded'), el('th', {}, ''))), served),
    el('h2', {}, 'Catalogue'),
    el('table', { class: 'rows' }, el('thead', {}, el('tr', {}, ['Alias', 'Model', 'Use', 'Memory', ''].map((h) => el('th', {}, h)))), catalogue));

  const chat = (id) => el('button', { type: 'button', onclick: () => navigate(`/inference?model=${encodeURIComponent(id)}`) }, 'Chat');
  async function load() {
    const [store, known] = await Promise.all([
      api('/api/store').catch((e) => { toast(e); return { models: [], total_bytes: 0, catalogue: [] }; }),
      api('/api/models').catch((e) => { toast(e); return { models: [] }; }),
    ]);
    const n = store.models.length;
    usage.textContent = `${n} model${n === 1 ? '' : 's'}, ${bytes(store.total_bytes)} on disk`;
    list.replaceChildren(...store.models.map((m) => el('tr', {},
      el('td', {}, el('a', { href: `/models/${encodeURIComponent(m.name)}`, 'data-link': true }, m.name)),
      el('td', {}, m.format), el('td', {}, m.quantization || '–'), el('td', {}, bytes(m.size_bytes)), el('td', {}, m.context_length ?? '–'),
      el('td', {}, el('button', { type: 'button', class: 'danger', onclick: () => remove(m.name) }, 'Delete')))));
    if (!store.models.length) list.append(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'The store is empty: pull a model above.')));
    served.replaceChildren(...known.models.map((m) => el('tr', {},
      el('td', {}, el('a', { href: `/models/${encodeURIComponent(m.id)}`, 'data-link': true }, m.id)),
      el('td', {}, m.loaded ? 'yes' : 'no'), el('td', {}, chat(m.id)))));
    catalogue.replaceChildren(...store.catalogue.map((c) => el('tr', {},
      el('td', {}, c.alias), el('td', {}, c.spec), el('td', {}, c.description), el('td', {}, `${c.memory_gb} GB`),
      el('td', {}, el('button', { type: 'button', onclick: () => { repo.value = c.alias; start(); } }, 'Pull')))));
  }

  async function remove(id) {
    if (!confirm(`Delete ${id} from the model store? Its files are removed from disk.`)) return;
    try {
      await api(`/api/models/${encodeURIComponent(id)}`, { method: 'DELETE' });
      toast(`Deleted ${id}`, 'info');
    } catch (e) { toast(e); }
    await load();
  }

  async function start() {
    progress.hidden = false;
    progress.value = 0;
    line.textContent = 'Resolving…';
    const began = performance.now();
    let total = 0;
    try {
      const res = await request('/api/models/pull', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: repo.value.trim() }) });
      // Bytes present per file (a resumed or cached file counts whole), against the resolved total.
      const sizes = {};
      const present = {};
      await readEvents(res, (e) => {
        if (e.event === 'resolved') total = e.total_bytes;
        if (e.event === 'file_started') sizes[e.file] = e.size;
        if (e.event === 'file_cached' || e.event === 'file_verified') present[e.file] = sizes[e.file] ?? present[e.file] ?? 0;
        if (e.event === 'progress') present[e.file] = e.done;
        if (['progress', 'file_cached', 'file_verified'].includes(e.event)) {
          const done = Object.values(present).reduce((a, b) => a + b, 0);
          const secs = (performance.now() - began) / 1000;
          const speed = done / Math.max(secs, 1e-3);
          progress.value = total ? Math.min(1, done / total) : 0;
          const eta = total && speed ? Math.max(0, total - done) / speed : null;
          line.textContent = `${bytes(done)} of ${bytes(total)} · ${bytes(speed)}/s` + (eta !== null ? ` · ${Math.ceil(eta)} s left` : '');
        }
        if (e.event === 'done') { progress.value = 1; line.textContent = `Pulled ${repo.value.trim()}`; }
        if (e.event === 'failed') throw new Error(e.message || e.error || 'the pull failed');
      });
    } catch (e) { toast(e); line.textContent = 'Failed.'; }
    await load();
  }
  await load();
}
