// One model: its registration and load status, what its files say (format, architecture,
// quantisation, context, files, chat template), its sampling defaults once loaded, the
// training run it came from (hub fine-tunes); pre-load, unload, unregister, use in chat.

import { api, bytes, el, navigate, toast, when } from '../app.js';

export async function render(main, [id]) {
  const name = id;
  const enc = encodeURIComponent(name);
  const body = el('div', { id: 'model-detail' });
  main.append(el('h1', {}, name), body);

  async function load() {
    const [registered, card, facts] = await Promise.all([
      api('/admin/models').then((r) => r.models.find((m) => m.name === name)).catch(() => null),
      api(`/v1/models/${enc}`).catch(() => null),
      api(`/api/models/${enc}`).catch(() => null),
    ]);
    if (!registered && !card) {
      body.replaceChildren(el('p', {}, `No model named “${name}”.`), el('a', { href: '/registry', 'data-link': true }, 'Back to the registry'));
      return;
    }
    const status = registered?.status || (facts?.loaded ? 'loaded' : 'not loaded');
    const rows = [
      ['Status', el('span', { class: `pill ${status}`, id: 'model-status' }, status)],
      ['Memory', registered?.memory_bytes || facts?.memory_bytes ? bytes(registered?.memory_bytes || facts.memory_bytes) : '–'],
      ['Format', facts && `${facts.format}${facts.quantization ? ` (${facts.quantization})` : ''}`],
      ['Architecture', facts && `${facts.architecture}, ${facts.layers} layers, hidden ${facts.hidden_size}, vocabulary ${facts.vocab_size}`],
      ['Context', facts && `${facts.context_length} tokens` + (facts.running_context ? ` (runs with ${facts.running_context})` : '')],
      ['Size', facts && bytes(facts.size_bytes)],
      ['Path', facts?.path],
      ['Type', registered?.type || 'model'],
      ['Base model', registered?.base_model],
      ['Adapter', registered?.adapter_path],
      ['Files', registered?.model_id],
      ['Registered by', registered?.registered_by],
      ['Registered', registered ? when(registered.created_at) : null],
    ];
    const defaults = card?.sampling_defaults;
    if (defaults) rows.push(['Sampling defaults', Object.entries(defaults).map(([k, v]) => `${k} ${v}`).join(', ')]);
    if (card?.embedding) rows.push(['Embedding', `${card.embedding.dimension} dimensions`]);
    const info = el('dl', { class: 'facts' }, rows.filter(([, v]) => v !== undefined && v !== null && v !== '')
      .flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    const actions = el('div', { class: 'toolbar' },
      el('button', { type: 'button', id: 'use-in-chat', onclick: () => navigate(`/inference?model=${enc}`) }, 'Use in chat'),
      el('button', { type: 'button', onclick: () => act(`/api/models/${enc}/load`, 'POST') }, 'Pre-load'),
      el('button', { type: 'button', onclick: () => act(`/api/models/${enc}/unload`, 'POST') }, 'Unload'),
      registered ? el('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm(`Unregister ${name}?`)) return;
        await act(`/admin/models/${enc}`, 'DELETE');
        navigate('/registry');
      } }, 'Unregister') : null);
    body.replaceChildren(info, actions);
    if (facts) {
      body.append(el('h2', {}, 'Files'), el('ul', { id: 'model-files' }, facts.files.map((f) => el('li', {}, `${f.name} · ${bytes(f.bytes)}`))));
      body.append(el('details', { id: 'chat-template' }, el('summary', {}, 'Chat template'),
        el('pre', { class: 'preview' }, facts.chat_template || 'none: the model formats prompts as plain text')));
    }
    const run = registered?.registered_by === 'hearth-hub' ? registered.model_id : null;
    if (run) {
      const summary = await api(`/hub/runs?ids=${encodeURIComponent(run)}`).then((r) => r.runs[0]).catch(() => null);
      if (summary) {
        body.append(el('h2', {}, 'Training run'),
          el('p', {}, `${summary.id}: ${summary.dataset} on ${summary.base_model}, ${summary.iters} iterations`),
          el('img', { src: `/hub/runs/loss.svg?runs=${encodeURIComponent(run)}`, alt: `Loss curves of ${run}`, class: 'curve' }));
      }
    }
  }

  async function act(path, method) {
    try { await api(path, { method }); } catch (e) { toast(e); }
    await load();
  }
  await load();
}
