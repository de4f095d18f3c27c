// The server driven by the official `openai` Node SDK, with node's built-in test runner.
// Run by crates/hearth-server/tests/sdk.rs, which starts the server and sets HEARTH_BASE_URL.
const test = require('node:test');
const assert = require('node:assert/strict');
const { OpenAI } = require('openai');

const model = process.env.HEARTH_MODEL || 'tiny';
const client = new OpenAI({ baseURL: `${process.env.HEARTH_BASE_URL}/v1`, apiKey: 'unused', maxRetries: 0 });
const user = (content) => [{ role: 'user', content }];

test('chat, streamed and not, agree', async () => {
  const full = await client.chat.completions.create({ model, messages: user('Hello'), max_tokens: 8, temperature: 0 });
  assert.equal(full.choices[0].finish_reason, 'length');
  const stream = await client.chat.completions.create({
    model, messages: user('Hello'), max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, full.choices[0].message.content);
  assert.equal(usage.completion_tokens, 8);
});

test('completions with n, logprobs and seeds', async () => {
  const req = { model, prompt: 'Once', max_tokens: 6, n: 2, temperature: 0.9, seed: 5, logprobs: 2 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(a.choices[0].logprobs.tokens.length, 6);
});

test('stop strings end generation', async () => {
  const text = (await client.completions.create({ model, prompt: 'q', max_tokens: 16, temperature: 0 })).choices[0].text;
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
  const cut = (await client.completions.create({ model, prompt: 'q', max_tokens: 16, temperature: 0, stop })).choices[0];
  assert.equal(cut.finish_reason, 'stop');
  assert.ok(text.startsWith(cut.text) && !cut.text.includes(stop));
});

test('errors', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: user('x'), temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature',
  );
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages: user('x') }), OpenAI.NotFoundError);
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), OpenAI.BadRequestError);
});

test('embeddings as floats, as base64 (the SDK default, decoded by it) and truncated by dimensions', async () => {
  const embeddingModel = process.env.HEARTH_EMBEDDING_MODEL || 'minilm';
  const input = ['A man is eating food.', 'A monkey is playing drums.'];
  const floats = await client.embeddings.create({ model: embeddingModel, input, encoding_format: 'float' });
  assert.deepEqual(floats.data.map((d) => d.index), [0, 1]);
  assert.equal(floats.data[0].embedding.length, 384);
  assert.equal(floats.usage.prompt_tokens, 16);
  const norm = floats.data[0].embedding.reduce((s, x) => s + x * x, 0);
  assert.ok(Math.abs(norm - 1) < 1e-4);
  const decoded = await client.embeddings.create({ model: embeddingModel, input });
  const f32 = (v) => Array.from(Float32Array.from(v));
  assert.deepEqual(decoded.data.map((d) => f32(d.embedding)), floats.data.map((d) => f32(d.embedding)));
  const cut = await client.embeddings.create({ model: embeddingModel, input: input[0], dimensions: 32, encoding_format: 'float' });
  assert.equal(cut.data[0].embedding.length, 32);
  await assert.rejects(client.embeddings.create({ model: embeddingModel, input: 'word '.repeat(400) }), (e) => e.status === 400 && e.param === 'input[0]');
  await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }), (e) => e.status === 404);
});

test('tool calls: required gives calls whose arguments parse; streamed deltas add up to them', async () => {
  const smol = process.env.HEARTH_TOOLS_MODEL || 'smol';
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 40 } }, required: ['city'], additionalProperties: false } } }];
  const body = { model: smol, messages: user('What is the weather in Paris?'), tools, tool_choice: 'required', temperature: 1, seed: 5, max_tokens: 120 };
  const whole = await client.chat.completions.create(body);
  assert.equal(whole.choices[0].finish_reason, 'tool_calls');
  const calls = whole.choices[0].message.tool_calls;
  assert.ok(calls.length >= 1 && calls.every((c) => c.function.name === 'get_weather' && typeof JSON.parse(c.function.arguments).city === 'string'));
  const streamed = [];
  for await (const chunk of await client.chat.completions.create({ ...body, stream: true })) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      streamed[d.index] ??= { name: d.function.name, arguments: '' };
      streamed[d.index].arguments += d.function.arguments ?? '';
    }
  }
  assert.deepEqual(streamed, calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })));
});
