// Models: what is in the store (format, quantisation, size, disk used) and what else the
// server can run, the catalogue, pulling a model from the Hub by repo id or alias with a live
// progress bar (bytes, speed, ETA; an interrupted pull resumes), converting or quantising a
// model into the store (MLX, Hugging Face, GGUF) with its progress, and deleting a stored one.

import { api, bytes, el, field, navigate, readEvents, request, toast } from '../app.js';

export async function render(main) {
  const list = el('tbody', { id: 'model-rows' });
  const repo = el('input', { id: 'pull-repo', placeholder: 'HuggingFaceTB/SmolLM2-135M-Instruct', required: true });
  const progress = el('progress', { id: 'pull-progress', max: 1, value: 0, hidden: true });
  const line = el('p', { id: 'pull-status', class: 'muted', 'aria-live': 'polite' });
  const pull = el('form', { class: 'card', onsubmit: (e) => { e.preventDefault(); start(); } },
    el('h2', {}, 'Pull a model'), field('Repo id (optionally @revision or :QUANT)', repo), el('button', { type: 'submit', id: 'pull-button' }, 'Pull'), progress, line);
  const source = el('select', { id: 'convert-source', required: true });
  const target = el('select', { id: 'convert-to' }, [['gguf', 'GGUF'], ['mlx', 'MLX'], ['hf', 'Hugging Face']].map(([v, t]) => el('option', { value: v }, t)));
  const ggufType = el('select', { id: 'convert-gguf-type' }, ['', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K_M', 'Q4_K_S', 'Q5_K_M', 'Q5_K_S', 'Q6_K', 'F16', 'BF16', 'F32']
    .map((t) => el('option', { value: t }, t || 'as the source')));
  const bits = el('select', { id: 'convert-bits' }, ['', '2', '3', '4', '5', '6', '8'].map((b) => el('option', { value: b }, b ? `${b}-bit` : 'float')));
  const outName = el('input', { id: 'convert-name', required: true, pattern: '[A-Za-z0-9._\\-]+', placeholder: 'my-model-q8' });
  const converting = el('progress', { id: 'convert-progress', max: 1, value: 0, hidden: true });
  const convertLine = el('p', { id: 'convert-status', class: 'muted', 'aria-live': 'polite' });
  const ggufField = field('GGUF type', ggufType);
  const bitsField = field('MLX quantisation', bits);
  const showOptions = () => { ggufField.hidden = target.value !== 'gguf'; bitsField.hidden = target.value !== 'mlx'; };
  target.addEventListener('change', showOptions);
  showOptions();
  const convertForm = el('form', { class: 'card', id: 'convert-form', onsubmit: (e) => { e.preventDefault(); convert(); } },
    el('h2', {}, 'Convert or quantise'),
    el('div', { class: 'grid' }, field('Model', source), field('To', target), ggufField, bitsField, field('Name in the store', outName)),
    el('button', { type: 'submit' }, 'Convert'), converting, convertLine);
  const usage = el('p', { id: 'store-usage', class: 'muted' });
  const served = el('tbody', { id: 'served-rows' });
  const catalogue = el('tbody', { id: 'catalogue-rows' });
  main.append(el('h1', {}, 'Models'), pull, convertForm,
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
    const chosen = source.value;
    source.replaceChildren(...known.models.map((m) => el('option', { value: m.id, selected: m.id === chosen }, m.id)));
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

  async function convert() {
    const body = { model: source.value, to: target.value, name: outName.value.trim() };
    if (target.value === 'gguf' && ggufType.value) body.gguf_type = ggufType.value;
    if (target.value === 'mlx' && bits.value) body.bits = Number(bits.value);
    converting.hidden = false;
    converting.value = 0;
    convertLine.textContent = 'Starting…';
    try {
      const res = await request('/api/models/convert', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      await readEvents(res, (e) => {
        if (e.event === 'progress') {
          converting.value = e.total ? e.done / e.total : 0;
          convertLine.textContent = `${e.done} of ${e.total} tensors`;
        } else if (e.event === 'done') {
          converting.value = 1;
          convertLine.textContent = `Converted: ${e.model.name} (${e.model.format}, ${bytes(e.model.size_bytes)})`;
        } else if (e.event === 'failed') {
          throw new Error(e.message);
        }
      });
    } catch (e) { toast(e); convertLine.textContent = 'Failed.'; }
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
