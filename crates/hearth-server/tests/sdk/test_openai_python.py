"""The server driven by the official `openai` Python SDK (and `websockets` for /api/chat/ws).

Run by crates/hearth-server/tests/sdk.rs, which starts the server and sets HEARTH_BASE_URL.
"""
import base64
import json
import os
import struct
import urllib.error
import urllib.request

import openai
import pytest
from websockets.sync.client import connect

BASE = os.environ["HEARTH_BASE_URL"]
MODEL = os.environ.get("HEARTH_MODEL", "tiny")
# all-MiniLM-L6-v2, which scripts/fetch-test-models.sh installs.
EMBEDDING_MODEL = os.environ.get("HEARTH_EMBEDDING_MODEL", "minilm")
# SmolLM2-135M-Instruct, which scripts/fetch-test-models.sh installs: tools need a real model.
SMOL = os.environ.get("HEARTH_TOOLS_MODEL", "smol")
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0)


def user(text):
    return [{"role": "user", "content": text}]


def test_chat_and_its_stream_agree():
    full = client.chat.completions.create(model=MODEL, messages=user("Hello"), max_tokens=8, temperature=0)
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model=MODEL, messages=user("Hello"), max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8


def test_completions_streaming_and_not():
    full = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == full.choices[0].text
    assert full.usage.prompt_tokens > 0


def test_n_choices_and_logprobs():
    r = client.chat.completions.create(model=MODEL, messages=user("Hi"), max_tokens=5, n=3, temperature=1.0,
                                       seed=3, logprobs=True, top_logprobs=2)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        assert len(c.logprobs.content) == 5
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in c.logprobs.content)
    lp = client.completions.create(model=MODEL, prompt="abc", max_tokens=3, logprobs=2, temperature=0).choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.top_logprobs[0]) == 2


def test_seed_reproduces():
    kw = dict(model=MODEL, messages=user("Write a story"), max_tokens=16, temperature=0.9, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_stop_strings():
    text = client.completions.create(model=MODEL, prompt="xyz", max_tokens=16, temperature=0).choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = client.completions.create(model=MODEL, prompt="xyz", max_tokens=16, temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and text.startswith(cut.text)


def test_second_turn_is_served_from_the_prompt_cache():
    msgs = user("Tell me about the sea.")
    first = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=0)
    msgs += [{"role": "assistant", "content": first.choices[0].message.content}] + user("More?")
    second = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


@pytest.mark.parametrize("kwargs,param", [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 10**6}, "max_tokens"),
    ({"extra_body": {"frobnicate": True}}, "frobnicate"),
])
def test_invalid_fields_are_400s_naming_the_field(kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("x"), **{"max_tokens": 2, **kwargs})
    assert e.value.status_code == 400
    assert e.value.body["param"] == param


def test_unknown_model_and_empty_messages():
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=user("x"))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    assert [m.id for m in client.models.list()][0] == MODEL
    assert client.models.retrieve(MODEL).id == MODEL


def http(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_chat_backend_and_registry_routes():
    assert http("GET", "/api/health")[0] == 200
    status, reply = http("POST", "/api/chat/completions", {"messages": user("Hi"), "max_tokens": 3})
    assert status == 200 and reply["message"]["role"] == "assistant"
    assert http("POST", "/api/models/nope/load")[0] == 404
    assert http("POST", "/admin/models", {"name": "x", "type": "lora", "base_model": "nope", "adapter_path": "/none"})[0] == 404
    assert http("POST", "/admin/models", {"name": ""})[0] == 400
    assert http("GET", "/admin/models/ghost/status")[0] == 404


def test_websocket_chat_and_errors():
    with connect(BASE.replace("http://", "ws://") + "/api/chat/ws") as ws:
        ws.send(json.dumps({"type": "chat", "messages": [], "temperature": 0}))
        assert json.loads(ws.recv())["type"] == "error"
        ws.send(json.dumps({"type": "chat", "messages": user("Hi"), "temperature": 0, "max_tokens": 4}))
        kinds = []
        while not kinds or kinds[-1] != "done":
            kinds.append(json.loads(ws.recv())["type"])
        assert "token" in kinds


def as_f32(values):
    """Python floats rounded to float32, as the server computed them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def test_embeddings_as_floats_and_base64_agree():
    texts = ["A man is eating food.", "A monkey is playing drums."]
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == 384 for d in floats.data)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 16
    assert abs(sum(x * x for x in floats.data[0].embedding) - 1) < 1e-4
    encoded = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="base64")
    for f, b in zip(floats.data, encoded.data):
        raw = base64.b64decode(b.embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == as_f32(f.embedding)
    # Without a format the SDK asks for base64 and decodes it itself.
    default = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    assert [as_f32(d.embedding) for d in default.data] == [as_f32(d.embedding) for d in floats.data]
    cut = client.embeddings.create(model=EMBEDDING_MODEL, input=texts[0], dimensions=32, encoding_format="float")
    assert len(cut.data[0].embedding) == 32


def test_embedding_errors():
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_MODEL, input="word " * 400, encoding_format="float")
    assert e.value.body["param"] == "input[0]"
    assert client.embeddings.create(model=EMBEDDING_MODEL, input="word " * 400, encoding_format="float",
                                    extra_body={"truncate": True}).usage.prompt_tokens == 256
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBEDDING_MODEL, input=[])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "colour": {"enum": ["red", "green", "blue"]},
        "address": {"$ref": "#/$defs/address"},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
    },
    "required": ["name", "colour", "address", "scores"],
    "additionalProperties": False,
    "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
                          "required": ["city"], "additionalProperties": False}},
}


def test_structured_outputs_parse_and_validate_every_time():
    # Sampled hot from a random-weight model: only the constraint makes these parse.
    import jsonschema
    for seed in range(20):
        r = client.chat.completions.create(
            model=MODEL, messages=user("Make up a person."), temperature=1.0, seed=seed, max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}})
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
        r = client.chat.completions.create(model=MODEL, messages=user("JSON, please."), temperature=1.0, seed=seed,
                                           max_tokens=60, response_format={"type": "json_object"})
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_parse_with_a_pydantic_model():
    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        name: str = Field(max_length=20)
        age: int = Field(ge=0, le=30)
        kind: str = Field(pattern="^(cat|dog|fish)$")

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    r = parse(model=MODEL, messages=user("Describe a pet."), response_format=Pet, temperature=1.0, seed=4, max_tokens=80)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish")


def test_a_bad_schema_is_a_400_naming_it():
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}})
    assert e.value.body["param"] == "response_format.json_schema.schema"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7}, "maxItems": 3}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET", "JST"]}},
                   "required": ["zone"], "additionalProperties": False}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
ASK = user("What is the weather in Paris, and what time is it in Tokyo?")


def valid_calls(message):
    import jsonschema
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return message.tool_calls


def test_required_and_named_tool_calls_validate_every_time():
    for seed in range(20):
        r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           temperature=1.0, seed=seed, max_tokens=150)
        assert r.choices[0].finish_reason == "tool_calls"
        valid_calls(r.choices[0].message)
        r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME], temperature=1.0, seed=seed,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=150)
        calls = valid_calls(r.choices[0].message)
        assert [c.function.name for c in calls] == ["get_time"]


def test_parallel_calls_and_their_switch():
    counts = []
    for seed in range(12):
        r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           temperature=1.0, seed=seed, max_tokens=200)
        counts.append(len(valid_calls(r.choices[0].message)))
        r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=200)
        assert len(valid_calls(r.choices[0].message)) == 1
    assert max(counts) >= 2, counts


def test_auto_calls_stream_as_deltas_that_add_up_to_the_call():
    called = 0
    for seed in range(10):
        kwargs = dict(model=SMOL, messages=user("What is the weather in Paris?"), tools=[WEATHER], temperature=1.0,
                      seed=seed, max_tokens=150)
        whole = client.chat.completions.create(**kwargs).choices[0]
        calls, content, finish = {}, "", None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                content += choice.delta.content or ""
                for d in choice.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"id": d.id, "name": d.function.name, "arguments": ""})
                    entry["arguments"] += d.function.arguments or ""
        assert finish == whole.finish_reason
        if whole.message.tool_calls:
            called += 1
            valid_calls(whole.message)
            assert [(c["name"], c["arguments"]) for c in calls.values()] == \
                [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
            assert all(c["id"] for c in calls.values())
        else:
            assert content == whole.message.content and not calls
    assert called > 0, "SmolLM2 never called the tool it was invited to"


def test_a_call_its_result_and_the_answer():
    first = client.chat.completions.create(model=SMOL, messages=user("What is the weather in Paris?"), tools=[WEATHER],
                                           tool_choice="required", temperature=0, max_tokens=100).choices[0].message
    call = valid_calls(first)[0]
    history = user("What is the weather in Paris?") + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees and sunny"}]
    answer = client.chat.completions.create(model=SMOL, messages=history, tools=[WEATHER], tool_choice="none",
                                            temperature=0, max_tokens=40).choices[0]
    assert answer.message.content and not answer.message.tool_calls and answer.finish_reason in ("stop", "length")


@pytest.mark.parametrize("kwargs,param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "frobnicate"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}], "tools": [WEATHER]}, "messages[0].tool_call_id"),
])
def test_bad_tools_are_400s_naming_the_field(kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**{"model": SMOL, "messages": ASK, "max_tokens": 4, **kwargs})
    assert e.value.body["param"] == param, e.value.body


def test_langchain_binds_tools_and_structures_output():
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    llm = ChatOpenAI(base_url=BASE + "/v1", api_key="unused", model=SMOL, temperature=1.0, seed=3, max_tokens=300, max_retries=0)

    def get_weather(city: str, unit: str) -> str:
        """The current weather in a city, in celsius or fahrenheit."""
        return "sunny"

    reply = llm.bind_tools([get_weather], tool_choice="required").invoke("What is the weather in Paris?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
    assert set(reply.tool_calls[0]["args"]) <= {"city", "unit"}

    class City(BaseModel):
        name: str = Field(max_length=30)
        country: str = Field(max_length=30)
        population: int = Field(ge=0, le=10**9)

    for method in ("json_schema", "function_calling"):
        city = llm.with_structured_output(City, method=method).invoke("Describe Paris.")
        assert isinstance(city, City), method


def test_websocket_chat_with_tools_sends_the_calls_before_done():
    with connect(BASE.replace("http://", "ws://") + "/api/chat/ws") as ws:
        ws.send(json.dumps({"type": "chat", "model": SMOL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required",
                            "temperature": 0, "max_tokens": 100}))
        events = []
        while not events or events[-1]["type"] not in ("done", "error"):
            events.append(json.loads(ws.recv()))
        assert [e["type"] for e in events[-2:]] == ["tool_calls", "done"], events
        assert events[-1]["finish_reason"] == "tool_calls"
        valid = [c for c in events[-2]["tool_calls"] if c["function"]["name"] in SCHEMAS]
        assert valid and len(valid) == len(events[-2]["tool_calls"])
