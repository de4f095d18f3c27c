// Chat: a model, a system prompt and sampling settings; replies stream in as Markdown with
// their stats; stop, regenerate, edit-and-resend. RAG mode answers from the knowledge base
// (the chat API's `knowledge_base` option) and lists the sources, marking those cited; the
// knowledge panel searches it and pins chunks as sources. Conversations are saved on the
// server (`/api/conversations`, per API key): listed, reopened, renamed, deleted, exported.

import { api, el, field, readEvents, request, toast } from '../app.js';
import { render as markdown } from '../markdown.js';

export async function render(main, _params, query) {
  const state = { messages: [], pinned: [], controller: null, id: null };
  const saved = el('ul', { class: 'conversation-list', id: 'conversations' });
  const models = await api('/v1/models').then((r) => r.data.map((m) => m.id)).catch((e) => { toast(e); return []; });
  const wanted = query.get('model');
  const model = el('select', { id: 'model' }, models.map((id) => el('option', { value: id, selected: id === wanted }, id)));
  if (wanted && !models.includes(wanted)) toast(`No model named “${wanted}” is available`);
  const system = el('textarea', { id: 'system', rows: 2, placeholder: 'You are a helpful assistant.' });
  const temperature = el('input', { id: 'temperature', type: 'number', min: 0, max: 2, step: 0.1, value: '0.7' });
  const maxTokens = el('input', { id: 'max-tokens', type: 'number', min: 1, max: 65536, value: '512' });
  // Left empty, a setting takes the model's own default (the server's, then llama.cpp's).
  const optional = (id, attrs) => el('input', { id, type: 'number', placeholder: 'model default', ...attrs });
  const topP = optional('top-p', { min: 0, max: 1, step: 0.05 });
  const topK = optional('top-k', { min: 0, step: 1 });
  const minP = optional('min-p', { min: 0, max: 1, step: 0.01 });
  const repeat = optional('repetition-penalty', { min: 0.5, max: 2, step: 0.05 });
  const rag = el('input', { id: 'rag', type: 'checkbox' });
  const log = el('div', { class: 'messages', id: 'messages', 'aria-live': 'polite' });
  const input = el('textarea', { id: 'prompt', rows: 3, placeholder: 'Message (Enter sends, Shift+Enter for a new line)', 'aria-label': 'Message' });
  const send = el('button', { type: 'submit', id: 'send' }, 'Send');
  const stop = el('button', { type: 'button', id: 'stop', hidden: true, onclick: () => state.controller?.abort() }, 'Stop');
  const pins = el('div', { class: 'pins', id: 'pins' });
  const panel = knowledgePanel(state, () => showPins());

  function showPins() {
    pins.replaceChildren(...state.pinned.map((hit, i) => el('span', { class: 'chip' }, hit.title || hit.content_id,
      el('button', { type: 'button', 'aria-label': `Remove ${hit.title || hit.content_id} from the context`,
        onclick: () => { state.pinned.splice(i, 1); showPins(); } }, '×'))));
  }

  const settings = el('details', { class: 'settings' }, el('summary', {}, 'Settings'),
    field('System prompt', system),
    el('div', { class: 'row' }, field('Temperature', temperature), field('Max tokens', maxTokens), field('Top p', topP), field('Top k', topK),
      field('Min p', minP), field('Repetition penalty', repeat)));
  const form = el('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); submit(); } },
    pins, input, el('div', { class: 'row' }, send, stop));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  const bookButton = el('button', { type: 'button', id: 'knowledge-toggle', 'aria-expanded': 'false', 'aria-controls': 'knowledge-panel',
    title: 'Knowledge panel', onclick: () => {
      panel.hidden = !panel.hidden;
      bookButton.setAttribute('aria-expanded', String(!panel.hidden));
      if (!panel.hidden) panel.querySelector('input').focus();
    } }, bookIcon(), ' Knowledge');
  const sidebar = el('nav', { class: 'conversations', 'aria-label': 'Conversations' },
    el('button', { type: 'button', id: 'new-chat', onclick: () => { state.id = null; state.messages = []; draw(); input.focus(); } }, 'New chat'),
    saved);
  main.append(el('div', { class: 'chat' },
    sidebar,
    el('section', { class: 'chat-main' },
      el('div', { class: 'toolbar' }, field('Model', model), el('label', { class: 'toggle' }, rag, ' RAG mode'), bookButton),
      settings, log, form),
    panel));
  input.focus();
  listConversations();
  if (query.get('conversation')) open(query.get('conversation'));

  /** The saved conversations, newest first, each with rename, export and delete. */
  async function listConversations() {
    const { conversations } = await api('/api/conversations').catch((e) => { toast(e); return { conversations: [] }; });
    saved.replaceChildren(...conversations.map((c) => {
      const title = el('button', { type: 'button', class: 'link conversation-title', 'aria-current': c.id === state.id ? 'true' : null,
        onclick: () => open(c.id) }, c.title);
      const rename = el('button', { type: 'button', class: 'icon', title: 'Rename', 'aria-label': `Rename ${c.title}`, onclick: () => {
        const box = el('input', { value: c.title, 'aria-label': 'New title', class: 'rename' });
        box.addEventListener('keydown', async (e) => {
          if (e.key === 'Escape') return listConversations();
          if (e.key !== 'Enter') return;
          try { await api(`/api/conversations/${c.id}`, { method: 'PATCH', body: { title: box.value } }); } catch (err) { toast(err); }
          listConversations();
        });
        title.replaceWith(box);
        box.focus();
      } }, '✎');
      const exportAs = (format) => el('button', { type: 'button', class: 'icon', title: `Export as ${format}`, 'aria-label': `Export ${c.title} as ${format}`,
        onclick: () => download(c, format) }, format === 'markdown' ? 'MD' : 'JSON');
      const remove = el('button', { type: 'button', class: 'icon danger', title: 'Delete', 'aria-label': `Delete ${c.title}`, onclick: async () => {
        if (!confirm(`Delete “${c.title}”?`)) return;
        try { await api(`/api/conversations/${c.id}`, { method: 'DELETE' }); } catch (err) { toast(err); }
        if (state.id === c.id) { state.id = null; state.messages = []; draw(); }
        listConversations();
      } }, '×');
      return el('li', { 'data-id': c.id }, title, el('span', { class: 'conversation-actions' }, rename, exportAs('json'), exportAs('markdown'), remove));
    }));
  }

  async function open(id) {
    try {
      const c = await api(`/api/conversations/${encodeURIComponent(id)}`);
      state.id = c.id;
      state.messages = c.messages.map((m) => ({ role: m.role, content: m.content, ...(m.meta || {}) }));
      if (c.model && [...model.options].some((o) => o.value === c.model)) model.value = c.model;
      draw();
      listConversations();
    } catch (e) { toast(e); }
  }

  async function download(c, format) {
    try {
      const res = await request(`/api/conversations/${c.id}${format === 'markdown' ? '?format=markdown' : ''}`);
      const blob = await res.blob();
      const link = el('a', { href: URL.createObjectURL(blob), download: `${c.id}.${format === 'markdown' ? 'md' : 'json'}` });
      document.body.append(link);
      link.click();
      link.remove();
      URL.revokeObjectURL(link.href);
    } catch (e) { toast(e); }
  }

  /** Saves the conversation on the server (made on its first reply). */
  async function save() {
    const messages = state.messages.map(({ role, content, model: m, stats: st, sources: so, citations: ci }) =>
      ({ role, content, meta: role === 'assistant' ? { model: m, stats: st, sources: so, citations: ci } : undefined }));
    try {
      if (state.id) await api(`/api/conversations/${state.id}`, { method: 'PATCH', body: { model: model.value, messages } });
      else state.id = (await api('/api/conversations', { method: 'POST', body: { model: model.value, messages } })).id;
      listConversations();
    } catch (e) { toast(e); }
  }

  function submit() {
    const text = input.value.trim();
    if (!text || state.controller) return;
    input.value = '';
    state.messages.push({ role: 'user', content: text });
    draw();
    reply();
  }

  function draw() {
    log.replaceChildren(...state.messages.map((m, i) => bubble(m, i)));
    log.scrollTop = log.scrollHeight;
  }

  function bubble(m, i) {
    const body = el('div', { class: 'body' }, ...(m.role === 'assistant' ? markdown(m.content) : [m.content]));
    const actions = el('div', { class: 'actions' });
    if (m.role === 'user') {
      actions.append(el('button', { type: 'button', class: 'link', onclick: () => edit(i) }, 'Edit'));
    } else if (i === state.messages.length - 1 && !state.controller) {
      actions.append(el('button', { type: 'button', class: 'link', id: 'regenerate', onclick: () => { state.messages.pop(); draw(); reply(); } }, 'Regenerate'));
    }
    const node = el('article', { class: `msg ${m.role}` }, el('header', {}, m.role === 'user' ? 'You' : m.model || 'Assistant'), body);
    if (m.stats) node.append(stats(m.stats));
    if (m.sources) node.append(sources(m));
    node.append(actions);
    m.node = node;
    return node;
  }

  function edit(i) {
    const m = state.messages[i];
    const area = el('textarea', { rows: 3, 'aria-label': 'Edit message', value: m.content });
    const save = el('button', { type: 'button', onclick: () => {
      state.messages.splice(i);
      state.messages.push({ role: 'user', content: area.value });
      draw();
      reply();
    } }, 'Send');
    m.node.querySelector('.body').replaceChildren(area, save);
    area.focus();
  }

  async function reply() {
    const chosen = model.value;
    if (!chosen) { toast('Choose a model first'); return; }
    const m = { role: 'assistant', content: '', model: chosen };
    state.messages.push(m);
    state.controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    draw();
    const started = performance.now();
    let first = null;
    const onText = (t) => {
      if (first === null) first = performance.now();
      m.content += t;
      m.node.querySelector('.body').replaceChildren(...markdown(m.content));
      log.scrollTop = log.scrollHeight;
    };
    let usage = null;
    try {
      usage = await complete(m, onText);
    } catch (e) {
      if (e.name !== 'AbortError') toast(e);
      else m.stopped = true;
    }
    const end = performance.now();
    m.stats = {
      ttft: first === null ? null : (first - started) / 1000,
      tps: usage && first !== null && end > first ? usage.completion_tokens / ((end - first) / 1000) : null,
      prompt: usage?.prompt_tokens, cached: usage?.prompt_tokens_details?.cached_tokens ?? 0, generated: usage?.completion_tokens,
      stopped: m.stopped,
    };
    state.controller = null;
    send.disabled = false;
    stop.hidden = true;
    draw();
    await save();
  }

  /** The conversation so far, with the system prompt. */
  function history() {
    const sys = system.value.trim();
    const all = state.messages.slice(0, -1).map(({ role, content }) => ({ role, content }));
    return (sys ? [{ role: 'system', content: sys }] : []).concat(all);
  }

  /** Streams the reply; in RAG mode, or with chunks pinned, the server answers from the
   * knowledge base (pinned chunks first) and reports the sources and citations at the end. */
  async function complete(m, onText) {
    const body = {
      model: m.model, messages: history(), stream: true, stream_options: { include_usage: true },
      temperature: Number(temperature.value), max_tokens: Number(maxTokens.value),
    };
    for (const [key, input] of [['top_p', topP], ['top_k', topK], ['min_p', minP], ['repetition_penalty', repeat]]) {
      if (input.value !== '') body[key] = Number(input.value);
    }
    if (rag.checked || state.pinned.length) {
      body.knowledge_base = { limit: rag.checked ? 4 : 0, chunks: state.pinned.map((h) => h.chunk_id) };
    }
    const res = await request('/v1/chat/completions', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: state.controller.signal,
    });
    let usage = null;
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) onText(delta);
      if (chunk.knowledge_base) {
        m.sources = chunk.knowledge_base.sources;
        m.citations = chunk.knowledge_base.citations;
      }
      if (chunk.usage) usage = chunk.usage;
    });
    return usage;
  }
}

/** A small open-book icon, drawn here (no icon font is fetched). */
function bookIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M2 5c3-1 6-1 10 1 4-2 7-2 10-1v14c-3-1-6-1-10 1-4-2-7-2-10-1zM12 6v14');
  path.setAttribute('fill', 'none');
  path.setAttribute('stroke', 'currentColor');
  path.setAttribute('stroke-width', '1.6');
  svg.append(path);
  return svg;
}

function stats(s) {
  const parts = [];
  if (s.ttft !== null) parts.push(`first token ${s.ttft.toFixed(2)} s`);
  if (s.tps) parts.push(`${s.tps.toFixed(1)} tok/s`);
  if (s.prompt !== undefined && s.prompt !== null) parts.push(`prompt ${s.prompt} (cached ${s.cached})`);
  if (s.generated !== undefined && s.generated !== null) parts.push(`generated ${s.generated}`);
  if (s.stopped) parts.push('stopped');
  return el('div', { class: 'stats' }, parts.join(' · '));
}

function sources(m) {
  const cited = new Set((m.citations || []).map((c) => c.n));
  const list = el('ol', { class: 'sources' }, m.sources.map((hit, i) => el('li', { class: cited.has(i + 1) ? 'cited' : '' },
    el('button', { type: 'button', class: 'link', onclick: () => openChunk(hit) }, `[${i + 1}] ${hit.title || hit.content_id}`),
    cited.has(i + 1) ? ' (cited)' : '')));
  return el('div', { class: 'cited-sources' }, el('strong', {}, cited.size ? 'Sources' : 'Sources (none cited)'), list);
}

function openChunk(hit) {
  const dialog = el('dialog', { class: 'chunk' }, el('h2', {}, hit.title || hit.content_id),
    el('p', { class: 'muted' }, [hit.source, hit.section?.join(' › '), hit.page ? `page ${hit.page}` : null].filter(Boolean).join(' · ')),
    el('div', { class: 'chunk-text' }, highlighted(hit)),
    el('form', { method: 'dialog' }, el('button', {}, 'Close')));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

/** A hit's chunk with its matched terms marked (`char_highlights` count characters). */
export function highlighted(hit) {
  const chars = Array.from(hit.chunk_text);
  const out = [];
  let at = 0;
  for (const h of hit.char_highlights || []) {
    out.push(chars.slice(at, h.start).join(''), el('mark', {}, chars.slice(h.start, h.end).join('')));
    at = h.end;
  }
  out.push(chars.slice(at).join(''));
  return out;
}

function knowledgePanel(state, changed) {
  const q = el('input', { type: 'search', id: 'kb-query', placeholder: 'Search the knowledge base', 'aria-label': 'Search the knowledge base' });
  const mode = el('select', { id: 'kb-mode', 'aria-label': 'Search mode' }, ['hybrid', 'bm25', 'vector'].map((m) => el('option', { value: m }, m)));
  const results = el('ol', { class: 'hits', id: 'kb-results' });
  const form = el('form', { onsubmit: async (e) => {
    e.preventDefault();
    if (!q.value.trim()) return;
    try {
      const res = await api(`/api/v1/search?q=${encodeURIComponent(q.value)}&mode=${mode.value}&limit=8`);
      results.replaceChildren(...(res.results || []).map((hit) => el('li', {},
        el('div', { class: 'hit-head' }, el('strong', {}, hit.title || hit.content_id), el('span', { class: 'score' }, hit.score.toFixed(3))),
        el('p', {}, highlighted(hit)),
        el('button', { type: 'button', class: 'add-context', onclick: () => {
          if (!state.pinned.some((p) => p.chunk_id === hit.chunk_id)) state.pinned.push(hit);
          changed();
        } }, 'Add to context'))));
      if (!results.children.length) results.append(el('li', { class: 'muted' }, 'Nothing found.'));
    } catch (err) { toast(err); }
  } }, q, mode, el('button', { type: 'submit' }, 'Search'));
  return el('aside', { class: 'knowledge-panel', id: 'knowledge-panel', hidden: true, 'aria-label': 'Knowledge panel' },
    el('h2', {}, 'Knowledge'), form, results);
}
