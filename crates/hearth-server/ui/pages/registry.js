// Registry: every registered model and adapter with its load status and memory; all or only
// the hub's fine-tunes; several rows at once pre-loaded or unregistered, each with its own
// spinner; a chat button per row.

import { api, bytes, el, navigate, toast, when } from '../app.js';

export async function render(main) {
  const filter = el('select', { id: 'registry-filter', 'aria-label': 'Show' },
    el('option', { value: '' }, 'All'), el('option', { value: 'hearth-hub' }, 'Hub-trained'));
  const body = el('tbody', { id: 'registry-rows' });
  const selectAll = el('input', { type: 'checkbox', 'aria-label': 'Select all' });
  const preload = el('button', { type: 'button', id: 'batch-preload', disabled: true }, 'Pre-load');
  const unregister = el('button', { type: 'button', id: 'batch-unregister', class: 'danger', disabled: true }, 'Unregister');
  main.append(el('h1', {}, 'Registry'),
    el('div', { class: 'toolbar' }, filter, preload, unregister),
    el('table', { class: 'rows' },
      el('thead', {}, el('tr', {}, el('th', {}, selectAll), el('th', {}, 'Name'), el('th', {}, 'Type'), el('th', {}, 'Base'),
        el('th', {}, 'Status'), el('th', {}, 'Memory'), el('th', {}, 'Registered'), el('th', {}, ''))),
      body));

  const selected = () => [...body.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
  const refreshButtons = () => { const n = selected().length; preload.disabled = unregister.disabled = n === 0; };

  async function load() {
    const q = filter.value ? `?registered_by=${filter.value}` : '';
    const { models } = await api(`/admin/models${q}`).catch((e) => { toast(e); return { models: [] }; });
    body.replaceChildren(...models.map((m) => el('tr', { 'data-name': m.name },
      el('td', {}, el('input', { type: 'checkbox', value: m.name, 'aria-label': `Select ${m.name}`, onchange: refreshButtons })),
      el('td', {}, el('a', { href: `/models/${encodeURIComponent(m.name)}`, 'data-link': true }, m.name),
        m.registered_by === 'hearth-hub' ? el('span', { class: 'badge' }, 'hub') : null),
      el('td', {}, m.type),
      el('td', {}, m.base_model || ''),
      el('td', { class: 'status' }, el('span', { class: `pill ${m.status}` }, m.status)),
      el('td', {}, m.memory_bytes ? bytes(m.memory_bytes) : '–'),
      el('td', {}, when(m.created_at)),
      el('td', {}, el('button', { type: 'button', class: 'chat-with', onclick: () => navigate(`/inference?model=${encodeURIComponent(m.name)}`) }, 'Chat')))));
    if (!models.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'Nothing is registered.')));
    selectAll.checked = false;
    refreshButtons();
  }

  /** Runs `action` on every selected row at once, a spinner in each until its answer. */
  async function batch(action) {
    const names = selected();
    await Promise.all(names.map(async (name) => {
      const cell = body.querySelector(`tr[data-name="${CSS.escape(name)}"] .status`);
      cell.replaceChildren(el('span', { class: 'spinner', role: 'progressbar', 'aria-label': `Working on ${name}` }));
      try { await action(name); } catch (e) { toast(e); }
    }));
    await load();
  }

  selectAll.addEventListener('change', () => {
    for (const c of body.querySelectorAll('input[type=checkbox]')) c.checked = selectAll.checked;
    refreshButtons();
  });
  filter.addEventListener('change', load);
  preload.addEventListener('click', () => batch((n) => api(`/admin/models/${encodeURIComponent(n)}/preload`, { method: 'POST' })));
  unregister.addEventListener('click', () => {
    const names = selected();
    if (confirm(`Unregister ${names.join(', ')}?`)) batch((n) => api(`/admin/models/${encodeURIComponent(n)}`, { method: 'DELETE' }));
  });
  await load();
}
