// Training: datasets (upload with line-numbered errors, preview, token statistics), a new
// fine-tuning job with mlx-lm's options, the live job (loss curve drawn as it arrives,
// tokens/s, ETA, cancel), runs compared on one chart, and the result opened in chat.

import { api, el, field, navigate, readEvents, request, toast, when } from '../app.js';

export async function render(main) {
  let stopLive = null;
  const datasets = el('tbody', { id: 'dataset-rows' });
  const dsFile = el('input', { type: 'file', id: 'dataset-file', accept: '.jsonl,.json,application/jsonl', 'aria-label': 'JSONL file' });
  const dsName = el('input', { id: 'dataset-name', placeholder: 'name', 'aria-label': 'Dataset name', pattern: '[A-Za-z0-9._\\-]+' });
  const dsError = el('p', { class: 'bad', id: 'dataset-error', role: 'alert' });
  const preview = el('div', { id: 'dataset-preview' });

  const models = await api('/v1/models').then((r) => r.data.map((m) => m.id)).catch(() => []);
  const jobName = el('input', { id: 'job-name', required: true, pattern: '[A-Za-z0-9._\\-]+', placeholder: 'my-model' });
  const jobModel = el('select', { id: 'job-model' }, models.map((m) => el('option', { value: m }, m)));
  const jobDataset = el('select', { id: 'job-dataset' });
  const num = (id, value, attrs = {}) => el('input', { id, type: 'number', value: String(value), ...attrs });
  const iters = num('job-iters', 100, { min: 1 });
  const lr = num('job-lr', 1e-5, { step: 'any', min: 0 });
  const batch = num('job-batch', 4, { min: 1 });
  const layers = num('job-layers', 16, { min: -1 });
  const rank = num('job-rank', 8, { min: 1 });
  const maskPrompt = el('input', { id: 'job-mask-prompt', type: 'checkbox' });
  const live = el('section', { class: 'card', id: 'live-job', hidden: true });
  const runs = el('tbody', { id: 'run-rows' });
  const compare = el('img', { id: 'compare', class: 'curve', alt: 'Loss curves of the chosen runs', hidden: true });

  main.append(el('h1', {}, 'Training'),
    el('section', { class: 'card' }, el('h2', {}, 'Datasets'),
      el('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); uploadDataset(); } }, dsName, dsFile, el('button', { type: 'submit' }, 'Upload')),
      dsError,
      el('table', { class: 'rows' }, el('thead', {}, el('tr', {}, ['Name', 'Format', 'Records', 'Train/valid/test', 'Added', ''].map((h) => el('th', {}, h)))), datasets),
      preview),
    el('section', { class: 'card' }, el('h2', {}, 'New fine-tune'),
      el('form', { id: 'job-form', onsubmit: (e) => { e.preventDefault(); startJob(); } },
        el('div', { class: 'grid' }, field('Name', jobName), field('Base model', jobModel), field('Dataset', jobDataset),
          field('Iterations', iters), field('Learning rate', lr), field('Batch size', batch), field('Layers (−1: all)', layers),
          field('LoRA rank', rank), el('label', { class: 'toggle' }, maskPrompt, ' Train on completions only (mask the prompt)')),
        el('button', { type: 'submit' }, 'Start'))),
    live,
    el('section', { class: 'card' }, el('h2', {}, 'Runs'),
      el('table', { class: 'rows' }, el('thead', {}, el('tr', {}, ['', 'Run', 'Model', 'Status', 'Train loss', 'Val loss', 'Started', ''].map((h) => el('th', {}, h)))), runs),
      el('button', { type: 'button', id: 'compare-runs', onclick: () => {
        const ids = [...runs.querySelectorAll('input:checked')].map((c) => c.value);
        if (!ids.length) return toast('Choose runs to compare', 'info');
        compare.src = `/hub/runs/loss.svg?runs=${ids.map(encodeURIComponent).join(',')}`;
        compare.hidden = false;
      } }, 'Compare'), compare));

  async function loadDatasets() {
    const { datasets: list } = await api('/hub/datasets').catch((e) => { toast(e); return { datasets: [] }; });
    jobDataset.replaceChildren(...list.map((d) => el('option', { value: d.name }, d.name)));
    datasets.replaceChildren(...list.map((d) => el('tr', {},
      el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => showDataset(d.name) }, d.name)),
      el('td', {}, d.format), el('td', {}, String(d.records)), el('td', {}, `${d.train}/${d.valid}/${d.test}`), el('td', {}, when(d.created_at)),
      el('td', {}, el('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm(`Delete the dataset ${d.name}?`)) return;
        try { await api(`/hub/datasets/${encodeURIComponent(d.name)}`, { method: 'DELETE' }); } catch (e) { toast(e); }
        loadDatasets();
      } }, 'Delete')))));
  }

  async function uploadDataset() {
    dsError.textContent = '';
    const file = dsFile.files[0];
    if (!file) return toast('Choose a JSONL file', 'info');
    const name = dsName.value.trim() || file.name.replace(/\.jsonl?$/, '');
    try {
      await request(`/hub/datasets?name=${encodeURIComponent(name)}`, { method: 'POST', headers: { 'Content-Type': 'application/jsonl' }, body: file });
      toast(`Added ${name}`, 'info');
      await loadDatasets();
      jobDataset.value = name;
      showDataset(name);
    } catch (e) {
      // The message names the file and line (`name.jsonl:3: …`).
      dsError.textContent = e.message;
    }
  }

  async function showDataset(name) {
    const q = jobModel.value ? `?model=${encodeURIComponent(jobModel.value)}` : '';
    const d = await api(`/hub/datasets/${encodeURIComponent(name)}${q}`).catch((e) => { toast(e); return null; });
    if (!d) return;
    const t = d.tokens;
    preview.replaceChildren(el('h3', {}, `${name}: first records`),
      el('pre', { class: 'preview' }, d.preview.map((r) => JSON.stringify(r)).join('\n')),
      t ? el('p', { id: 'dataset-tokens' }, `With ${jobModel.value}'s tokenizer: ${t.tokens} tokens in ${t.records} records `
        + `(${t.min}–${t.max}, mean ${t.mean.toFixed(0)}); ${t.over_max_seq_length} over max_seq_length ${t.max_seq_length}`) : null);
  }

  async function startJob() {
    const body = {
      name: jobName.value.trim(), model: jobModel.value, dataset: jobDataset.value,
      train: { iters: Number(iters.value), learning_rate: Number(lr.value), batch_size: Number(batch.value),
        num_layers: Number(layers.value), mask_prompt: maskPrompt.checked, rank: Number(rank.value),
        steps_per_report: Math.max(1, Math.floor(Number(iters.value) / 20)) },
    };
    try {
      const job = await api('/hub/jobs', { method: 'POST', body });
      follow(job);
      loadRuns();
    } catch (e) { toast(e); }
  }

  /** The job's live view: its loss curve grows with each progress event. */
  function follow(job) {
    if (stopLive) stopLive();
    const controller = new AbortController();
    stopLive = () => controller.abort();
    const points = [];
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 600 240');
    svg.setAttribute('class', 'curve');
    svg.setAttribute('id', 'live-curve');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', 'Training loss');
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', 'currentColor');
    line.setAttribute('stroke-width', '2');
    svg.append(line);
    const status = el('p', { id: 'live-status', 'aria-live': 'polite' }, job.status);
    const cancel = el('button', { type: 'button', class: 'danger', onclick: () => api(`/hub/jobs/${job.id}/cancel`, { method: 'POST' }).catch(toast) }, 'Cancel');
    const after = el('div', { class: 'toolbar', id: 'live-after' });
    live.hidden = false;
    live.replaceChildren(el('h2', {}, `${job.name} (${job.id})`), status, svg, cancel, after);
    const draw = () => {
      const maxX = Math.max(job.iters || 1, ...points.map((p) => p[0]));
      const ys = points.map((p) => p[1]);
      const lo = Math.min(...ys);
      const hi = Math.max(...ys, lo + 1e-6);
      line.setAttribute('points', points.map(([x, y]) => `${(10 + (x / maxX) * 580).toFixed(1)},${(230 - ((y - lo) / (hi - lo)) * 220).toFixed(1)}`).join(' '));
    };
    (async () => {
      try {
        const res = await request(`/hub/jobs/${job.id}/events`, { signal: controller.signal });
        await readEvents(res, (e) => {
          if (e.type === 'progress') {
            points.push([e.iter, e.loss]);
            draw();
            status.textContent = `iteration ${e.iter}/${e.iters} · loss ${e.loss.toFixed(3)} · ${e.tokens_per_sec.toFixed(0)} tok/s · ${Math.ceil(e.eta_secs)} s left`;
          } else if (e.type === 'status') {
            status.textContent = e.status + (e.error ? `: ${e.error}` : '');
            if (['completed', 'failed', 'cancelled'].includes(e.status)) {
              cancel.remove();
              loadRuns();
              if (e.status === 'completed') {
                after.replaceChildren(el('button', { type: 'button', id: 'chat-with-result', onclick: () => navigate(`/inference?model=${encodeURIComponent(job.name)}`) }, `Chat with ${job.name}`),
                  el('a', { href: `/models/${encodeURIComponent(job.name)}`, 'data-link': true }, 'Model details'));
              }
            }
          }
        });
      } catch (e) { if (e.name !== 'AbortError') toast(e); }
    })();
  }

  async function loadRuns() {
    const { runs: list } = await api('/hub/runs').catch((e) => { toast(e); return { runs: [] }; });
    const fmt = (v) => (typeof v === 'number' ? v.toFixed(3) : '–');
    runs.replaceChildren(...list.reverse().map((r) => el('tr', {},
      el('td', {}, el('input', { type: 'checkbox', value: r.id, 'aria-label': `Compare ${r.id}` })),
      el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => follow(r) }, r.id)),
      el('td', {}, r.version ? `${r.name}@${r.version}` : r.name),
      el('td', {}, r.status + (r.status === 'queued' && r.queue_position ? ` (#${r.queue_position})` : '')),
      el('td', {}, fmt(r.last.train_loss)), el('td', {}, fmt(r.last.val_loss)), el('td', {}, when(r.started_at)),
      el('td', {}, r.status === 'completed' && !r.removed_at
        ? el('button', { type: 'button', onclick: () => navigate(`/inference?model=${encodeURIComponent(`${r.name}@${r.version}`)}`) }, 'Chat') : ''))));
  }

  await Promise.all([loadDatasets(), loadRuns()]);
  return () => stopLive && stopLive();
}
