// The web UI as a person uses it, in Debian's headless Chromium driven by playwright-core,
// against a real `hearth serve` this script starts, stops and starts again. Run by
// tests/cli.rs (`a_person_uses_the_web_ui`), which gives it the binary, the models, a
// loopback Hub stand-in to pull from and where to save screenshots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

// ES modules ignore NODE_PATH: playwright-core is loaded from where scripts/sdk-env.sh put it.
const { chromium } = createRequire(path.join(process.env.NODE_PATH, 'x.js'))('playwright-core');

const env = process.env;
const home = mkdtempSync(path.join(os.tmpdir(), 'hearth-ui-'));
const shots = env.HEARTH_SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const port = await new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const base = `http://127.0.0.1:${port}`;
let server = null;
let browser = null;
let page = null;
const consoleErrors = [];
const foreign = [];
let expectingOutage = false;
// Errors a step provokes on purpose (Chromium logs every 4xx response): each is expected once.
const provoked = [];

async function startServer() {
  const models = ['--model', `smol=${env.HEARTH_SMOL}`, '--model', `minilm=${env.HEARTH_MINILM}`];
  server = spawn(env.HEARTH_BIN, ['serve', '--port', String(port), ...models, '--allow-path', env.HEARTH_TESTDATA],
    { env: { ...env, HEARTH_HOME: home }, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 600; i++) {
    try { if ((await fetch(`${base}/health`)).ok) return; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error('hearth serve did not start');
}

async function stopServer() {
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  await exited;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) {
      await page?.screenshot({ path: path.join(shots, `failed-${what.replace(/\W+/g, '-')}.png`), fullPage: true });
      throw new Error(`timed out waiting for ${what}: ${await page?.locator('#toasts').innerText()}`);
    }
    await sleep(100);
  }
}

async function api(method, p, body) {
  const res = await fetch(base + p, { method, headers: { 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function running() {
  const text = await (await fetch(`${base}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('hearth_running_sequences')).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
}

const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

async function openSettings(maxTokens, temperature) {
  if (!(await page.locator('details.settings').evaluate((d) => d.open))) await page.click('details.settings summary');
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#temperature', String(temperature));
}

/** Sends `text` in Chat; the texts the reply showed while it streamed, then its last. */
async function send(text) {
  const before = await page.locator('.msg.assistant').count();
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  const reply = page.locator('.msg.assistant').nth(before);
  const seen = new Set();
  await until('the reply to finish', async () => {
    seen.add(await reply.locator('.body').innerText());
    return (await page.locator('#stop').isHidden()) && (await reply.locator('.stats').count()) > 0;
  });
  return { seen: [...seen].filter(Boolean), reply };
}

before(async () => {
  await startServer();
  browser = await chromium.launch({ executablePath: env.HEARTH_CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error' || expectingOutage) return;
    const i = provoked.findIndex((re) => re.test(m.text()));
    if (i >= 0) provoked.splice(i, 1);
    else consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  context.on('request', (r) => { const u = r.url(); if (!u.startsWith(base) && !u.startsWith('data:')) foreign.push(u); });
  page.on('dialog', (d) => d.accept());
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) await stopServer();
});

test('chat loads fast, streams a reply with its stats, and stops a long one', async () => {
  const started = Date.now();
  await page.goto(`${base}/`);
  await page.waitForSelector('#send:not([disabled])');
  await page.waitForSelector('#model option[value="smol"]', { state: 'attached' });
  const interactive = Date.now() - started;
  const transferred = await page.evaluate(() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
    .reduce((a, e) => a + (e.transferSize || 0), 0));
  console.log(`chat page: interactive after ${interactive} ms, ${transferred} bytes transferred`);
  assert.ok(interactive < 1000, `interactive in ${interactive} ms`);
  assert.ok(transferred <= 300 * 1024, `${transferred} bytes`);

  await openSettings(48, 0);
  await page.fill('#top-k', '40');
  await page.fill('#repetition-penalty', '1.1');
  const { seen, reply } = await send('Write a short poem about the sea.');
  assert.ok(seen.length >= 3, `the reply grew in steps: ${JSON.stringify(seen)}`);
  const stats = await reply.locator('.stats').innerText();
  assert.match(stats, /first token [\d.]+ s · [\d.]+ tok\/s · prompt \d+ \(cached \d+\) · generated \d+/);
  await shot('chat');

  await openSettings(1000, 0.8);
  await page.fill('#prompt', 'Tell me a very long story about a dragon and a lighthouse keeper.');
  await page.press('#prompt', 'Enter');
  await until('text to stream', async () => (await page.locator('.msg.assistant').last().locator('.body').innerText()).length > 20);
  assert.ok((await running()) > 0, 'the reply is being generated');
  await page.click('#stop');
  await until('the running sequences to drop to 0', async () => (await running()) === 0, 5000);
  await until('the stopped reply', async () => (await page.locator('.msg.assistant').last().locator('.stats').innerText().catch(() => '')).includes('stopped'));
});

test('conversations are kept on the server: listed, reopened, renamed, exported and deleted', async () => {
  await until('the conversation to be saved', async () => (await page.locator('#conversations li').count()) === 1);
  const item = page.locator('#conversations li').first();
  assert.match(await item.innerText(), /Write a short poem about the sea/);
  await page.click('#new-chat');
  assert.equal(await page.locator('.msg').count(), 0);
  await item.locator('.conversation-title').click();
  await until('the conversation to reopen', async () => (await page.locator('.msg').count()) === 4);
  assert.match(await page.locator('.msg.assistant').first().locator('.stats').innerText(), /tok\/s/, 'its stats were kept');
  await item.getByRole('button', { name: /^Rename/ }).click();
  await page.fill('input.rename', 'Sea poems');
  await page.press('input.rename', 'Enter');
  await until('the new title', async () => (await page.locator('#conversations li').first().innerText()).includes('Sea poems'));
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#conversations li').first().getByRole('button', { name: /as markdown$/ }).click()]);
  const markdown = readFileSync(await download.path(), 'utf8');
  assert.match(markdown, /^# Sea poems\n/);
  assert.match(markdown, /## You\n\nWrite a short poem about the sea\./);
  await page.locator('#conversations li').first().getByRole('button', { name: /^Delete/ }).click();
  await until('the conversation to go', async () => (await page.locator('#conversations li').count()) === 0);
  assert.deepEqual((await api('GET', '/api/conversations')).body.conversations, []);
});

test('documents added on the Knowledge page answer with a citation from the chat panel', async () => {
  await page.goto(`${base}/knowledge`);
  await page.setInputFiles('#kb-files', [
    { name: 'lighthouse.md', mimeType: 'text/markdown', buffer: Buffer.from('# Lighthouses\n\n## Keepers\n\nThe keeper of the Skerry lighthouse was named Agnes Morrow.\n') },
    { name: 'tea.txt', mimeType: 'text/plain', buffer: Buffer.from('Green tea is made from unoxidised leaves. Black tea leaves are fully oxidised.') },
  ]);
  await until('both uploads', async () => (await page.locator('#kb-uploads .ok').count()) === 2);
  await until('the batch to finish', async () => (await page.locator('#kb-upload-status').innerText()) === '2 of 2 files');
  await until('the statistics', async () => (await page.locator('#kb-stats').innerText()).includes('2'));
  await shot('knowledge');

  await page.goto(`${base}/inference`);
  await page.click('#knowledge-toggle');
  await page.fill('#kb-query', 'keeper of the Skerry lighthouse');
  await page.press('#kb-query', 'Enter');
  await page.waitForSelector('#kb-results mark');
  assert.match(await page.locator('#kb-results li').first().innerText(), /Agnes Morrow/);
  await page.locator('#kb-results .add-context').first().click();
  await page.waitForSelector('#pins .chip');
  await openSettings(40, 0);
  const { reply } = await send('Who was the keeper of the Skerry lighthouse?');
  await shot('chat-knowledge');
  const cited = await reply.locator('.cited-sources li.cited').allInnerTexts();
  assert.ok(cited.some((t) => t.includes('lighthouse')), `the answer cites the pinned chunk: ${await reply.innerText()}`);
  await reply.locator('.cited-sources li.cited button').first().click();
  await page.waitForSelector('dialog.chunk[open]');
  assert.match(await page.locator('dialog.chunk').innerText(), /Agnes Morrow/);
  await page.click('dialog.chunk button');
});

test('registry rows are pre-loaded and unregistered as a batch', async () => {
  for (const name of ['reg-a', 'reg-b']) {
    const r = await api('POST', '/admin/models', { name, type: 'model', model_id: env.HEARTH_TINY });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  await page.goto(`${base}/registry`);
  await page.waitForSelector('tr[data-name="reg-b"]');
  for (const name of ['reg-a', 'reg-b']) await page.check(`tr[data-name="${name}"] input[type=checkbox]`);
  await page.click('#batch-preload');
  await until('both loaded', async () => (await page.locator('tr[data-name^="reg-"] .pill.loaded').count()) === 2);
  await shot('registry');
  for (const name of ['reg-a', 'reg-b']) await page.check(`tr[data-name="${name}"] input[type=checkbox]`);
  await page.click('#batch-unregister');
  await until('the rows to go', async () => (await page.locator('tr[data-name^="reg-"]').count()) === 0);
  assert.deepEqual((await api('GET', '/admin/models')).body.models, []);
});

test('a model pulled from the Hub shows its progress to the end; another is converted into the store', async () => {
  await page.goto(`${base}/models`);
  await page.fill('#pull-repo', env.HEARTH_PULL_REPO);
  await page.click('#pull-button');
  await until('the pull to finish', async () => (await page.locator('#pull-status').innerText()).startsWith('Pulled'));
  assert.equal(await page.locator('#pull-progress').evaluate((p) => p.value), 1);
  await until('the store to list it', async () => (await page.locator('#model-rows').innerText()).includes('tiny-llama'));
  await page.selectOption('#convert-source', 'smol');
  await page.selectOption('#convert-to', 'gguf');
  await page.selectOption('#convert-gguf-type', 'Q8_0');
  await page.fill('#convert-name', 'smol-q8');
  await page.click('#convert-form button[type=submit]');
  await until('the conversion', async () => (await page.locator('#convert-status').innerText()).startsWith('Converted: local/smol-q8'), 120000);
  await until('the store to list it', async () => (await page.locator('#model-rows').innerText()).includes('local/smol-q8'));
  assert.match(await page.locator('#store-usage').innerText(), /^2 models, [\d.]+ MB on disk$/);
  await shot('models');
  await page.goto(`${base}/models/smol`);
  await page.waitForSelector('#model-files li');
  const facts = await page.locator('#model-detail').innerText();
  assert.match(facts, /gguf \(Q4_1\)/);
  assert.match(facts, /llama, 30 layers/);
  assert.match(await page.locator('#model-files').innerText(), /SmolLM2-135M-Instruct-Q4_1\.gguf/);
  await shot('model');
});

test('a dataset is trained on, its loss curve drawn live, and the result chatted with', async () => {
  await page.goto(`${base}/training`);
  provoked.push(/status of 400/);
  await page.fill('#dataset-name', 'broken');
  await page.setInputFiles('#dataset-file', { name: 'broken.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from('{"text": "fine"}\nnot json\n') });
  await page.click('text=Upload');
  await until('the line-numbered error', async () => (await page.locator('#dataset-error').innerText()).includes(':2:'));
  await page.fill('#dataset-name', 'notes');
  await page.setInputFiles('#dataset-file', { name: 'notes.jsonl', mimeType: 'application/jsonl', buffer: readFileSync(env.HEARTH_DATASET) });
  await page.click('text=Upload');
  await page.waitForSelector('#dataset-preview pre');
  await page.fill('#job-name', 'ui-tuned');
  await page.selectOption('#job-model', 'smol');
  await page.selectOption('#job-dataset', 'notes');
  await page.fill('#job-iters', '6');
  await page.fill('#job-batch', '2');
  await page.fill('#job-lr', '0.0001');
  await page.fill('#job-layers', '4');
  await page.click('#job-form button[type=submit]');
  await until('the loss curve to draw', async () => ((await page.locator('#live-curve polyline').getAttribute('points')) || '').split(' ').length >= 3, 120000);
  await shot('training');
  await page.waitForSelector('#chat-with-result', { timeout: 120000 });
  await page.click('#chat-with-result');
  await until('chat with the result', async () => (await page.locator('#model').inputValue()) === 'ui-tuned');
  await openSettings(16, 0);
  const { seen } = await send('Hello!');
  assert.ok(seen.length > 0);
});

test('status shows the server, and the UI notices it stop and come back', async () => {
  await page.goto(`${base}/status`);
  await page.waitForSelector('#stat-running');
  await until('loaded models listed', async () => (await page.locator('#loaded tbody').innerText()).includes('smol'));
  await shot('status');
  expectingOutage = true;
  await stopServer();
  await page.waitForSelector('#server-retry:not([hidden])', { timeout: 15000 });
  assert.equal(await page.locator('#server-text').innerText(), 'offline');
  await shot('offline');
  await startServer();
  await page.click('#server-retry');
  await until('online again', async () => (await page.locator('#server-text').innerText()) === 'online');
  expectingOutage = false;
  await page.goto(`${base}/status`);
  await page.waitForSelector('#stat-running');
});

test('every page fits a phone-width screen and is reached by keyboard', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of ['/inference', '/registry', '/models', '/knowledge', '/training', '/status']) {
    await page.goto(base + p);
    await page.waitForSelector('main h1, main .chat');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${p} scrolls sideways by ${overflow} px`);
    if (p === '/inference') await shot('phone-chat');
  }
  // Tab from the top reaches the skip link, then the navigation.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Hearth');
  await page.setViewportSize({ width: 1280, height: 860 });
});

test('with an API key the UI asks for it once and keeps it in the browser', async () => {
  const keyed = spawn(env.HEARTH_BIN, ['serve', '--port', String(port + 1), '--model', `tiny=${env.HEARTH_TINY}`, '--api-key', 'sesame'],
    { env: { ...env, HEARTH_HOME: mkdtempSync(path.join(os.tmpdir(), 'hearth-ui-key-')) }, stdio: ['ignore', 'ignore', 'inherit'] });
  const keyedBase = `http://127.0.0.1:${port + 1}`;
  try {
    await until('the keyed server', async () => (await fetch(`${keyedBase}/health`).catch(() => null))?.ok);
    const context = await browser.newContext();
    const keyedPage = await context.newPage();
    const errors = [];
    keyedPage.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text()); });
    await keyedPage.goto(`${keyedBase}/`);
    await keyedPage.waitForSelector('#key-dialog[open]');
    await keyedPage.fill('#key-input', 'sesame');
    await keyedPage.click('#key-form button[type=submit]');
    await keyedPage.waitForSelector('#model option[value="tiny"]', { state: 'attached' });
    await keyedPage.reload();
    await keyedPage.waitForSelector('#model option[value="tiny"]', { state: 'attached' });
    assert.equal(await keyedPage.locator('#key-dialog[open]').count(), 0, 'the key was kept');
    assert.equal(await keyedPage.evaluate(() => localStorage.getItem('hearth.apiKey')), 'sesame');
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    keyed.kill('SIGTERM');
  }
});

test('nothing went wrong in the console, and nothing left the server', () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(provoked, [], 'every provoked error happened');
  assert.deepEqual(foreign, []);
});
