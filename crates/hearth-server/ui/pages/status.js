// Status: the server's own metrics (`/metrics`, Prometheus text) read every two seconds:
// loaded models and their memory, queue depth, running sequences, tokens per second and the
// prompt cache's hit rate.

import { bytes, el, request } from '../app.js';

/** `name{labels} value` lines as [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/(\w+)="((?:\\.|[^"\\])*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const sum = (metrics, name) => metrics.filter((m) => m.name === name).reduce((a, m) => a + m.value, 0);

export async function render(main) {
  const tiles = el('div', { class: 'tiles' });
  const table = el('tbody');
  main.append(el('h1', {}, 'Status'),
    el('p', {}, 'Live from ', el('a', { href: '/metrics' }, '/metrics'), ' · API reference at ', el('a', { href: '/docs' }, '/docs'),
      ' · a Grafana dashboard for these metrics ships in deploy/grafana/.'),
    tiles,
    el('h2', {}, 'Loaded models'),
    el('table', { id: 'loaded' }, el('thead', {}, el('tr', {}, el('th', {}, 'Model'), el('th', {}, 'Weights'), el('th', {}, 'KV cache'),
      el('th', {}, 'Running'), el('th', {}, 'Queued'))), table));
  let previous = null;
  async function tick() {
    const text = await request('/metrics').then((r) => r.text()).catch(() => null);
    if (text === null) return;
    const metrics = parseMetrics(text);
    const now = performance.now();
    const generated = sum(metrics, 'hearth_generated_tokens_total');
    const rate = previous ? Math.max(0, (generated - previous.generated) / ((now - previous.at) / 1000)) : 0;
    previous = { generated, at: now };
    const hits = sum(metrics, 'hearth_prompt_cache_hits_total');
    const requests = sum(metrics, 'hearth_time_to_first_token_seconds_count');
    const tile = (id, label, value) => el('div', { class: 'tile' }, el('span', {}, label), el('strong', { id }, value));
    tiles.replaceChildren(
      tile('stat-running', 'Running sequences', String(sum(metrics, 'hearth_running_sequences'))),
      tile('stat-queued', 'Queue depth', String(sum(metrics, 'hearth_queue_depth'))),
      tile('stat-rate', 'Tokens/s', rate.toFixed(1)),
      tile('stat-cache', 'Prompt-cache hit rate', requests ? `${((100 * hits) / requests).toFixed(0)} %` : '–'),
      tile('stat-generated', 'Tokens generated', String(generated)),
    );
    const models = [...new Set(metrics.filter((m) => m.name === 'hearth_model_weight_bytes').map((m) => m.labels.model))];
    const of = (name, model) => sum(metrics.filter((m) => m.labels.model === model), name);
    table.replaceChildren(...models.map((model) => el('tr', {},
      el('td', {}, el('a', { href: `/models/${encodeURIComponent(model)}`, 'data-link': true }, model)),
      el('td', {}, bytes(of('hearth_model_weight_bytes', model))),
      el('td', {}, bytes(of('hearth_kv_cache_bytes', model) + of('hearth_prompt_cache_bytes', model))),
      el('td', {}, String(of('hearth_running_sequences', model))),
      el('td', {}, String(of('hearth_queue_depth', model))))));
    if (!models.length) table.append(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No model is loaded.')));
  }
  await tick();
  const timer = setInterval(tick, 2000);
  return () => clearInterval(timer);
}
