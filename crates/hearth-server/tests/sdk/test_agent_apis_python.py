"""The Responses API (the `openai` SDK's `responses`) and Anthropic's Messages API (the
`anthropic` SDK) on the same server, tools included.

Run by crates/hearth-server/tests/sdk.rs, which starts the server and sets HEARTH_BASE_URL.
"""
import json
import os

import anthropic
import openai
import pytest

BASE = os.environ["HEARTH_BASE_URL"]
MODEL = os.environ.get("HEARTH_MODEL", "tiny")
SMOL = os.environ.get("HEARTH_TOOLS_MODEL", "smol")
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0)
claude = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0)

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                   "unit": {"enum": ["celsius", "fahrenheit"]}},
                  "required": ["city", "unit"], "additionalProperties": False}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
ASK = "What is the weather in Paris?"


def check(args):
    import jsonschema
    jsonschema.validate(args, WEATHER_SCHEMA)


def test_responses_calls_continue_from_stored_responses_and_are_deleted():
    tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_SCHEMA}]
    first = client.responses.create(model=SMOL, input=ASK, tools=tools, tool_choice="required", temperature=1.0,
                                    max_output_tokens=100)
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    check(json.loads(calls[0].arguments))
    second = client.responses.create(model=SMOL, previous_response_id=first.id, tools=tools, tool_choice="none",
                                     input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                             "output": "22 degrees and sunny"}], temperature=0, max_output_tokens=30)
    assert second.output_text and second.previous_response_id == first.id
    assert client.responses.retrieve(first.id).id == first.id
    assert client.responses.delete(first.id) is None or True
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=SMOL, previous_response_id=first.id, input="and now?")
    assert e.value.body["param"] == "previous_response_id"


def test_responses_structured_output_and_stream():
    import jsonschema
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    for seed_temperature in (0.0, 1.0):
        r = client.responses.create(model=MODEL, input="Make up a person.", text=fmt, temperature=seed_temperature,
                                    max_output_tokens=120)
        jsonschema.validate(json.loads(r.output_text), PERSON)
    deltas, done = "", None
    for event in client.responses.create(model=SMOL, input="Say hello.", temperature=0, max_output_tokens=16, stream=True):
        if event.type == "response.output_text.delta":
            deltas += event.delta
        if event.type in ("response.completed", "response.incomplete"):
            done = event.response
    assert done is not None and deltas == done.output_text
    whole = client.responses.create(model=SMOL, input="Say hello.", temperature=0, max_output_tokens=16, store=False)
    assert whole.output_text == deltas
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(whole.id)


def test_responses_stream_function_call_arguments():
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
    args, done = "", None
    for event in client.responses.create(model=SMOL, input=ASK, tools=tools, tool_choice="required", temperature=0,
                                         max_output_tokens=100, stream=True):
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
        if event.type == "response.completed":
            done = event.response
    call = [o for o in done.output if o.type == "function_call"][0]
    assert args == call.arguments
    check(json.loads(args))


@pytest.mark.parametrize("kwargs,param", [
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]}, "input[0].call_id"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "frobnicate"}}}}, "text.format.schema"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}, "tools[0].parameters"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": [{"type": "function_call", "call_id": "a", "name": "f", "arguments": "{oops"}]}, "input[0].arguments"),
])
def test_responses_errors_name_the_field(kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=SMOL, **kwargs)
    assert e.value.body["param"] == param, e.value.body


TOOLS = [{"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_SCHEMA}]


def test_anthropic_messages_call_tools_and_take_their_results():
    for _ in range(5):
        m = claude.messages.create(model=SMOL, max_tokens=100, messages=[{"role": "user", "content": ASK}], tools=TOOLS,
                                   tool_choice={"type": "any"}, extra_body={"temperature": 1.0})
        assert m.stop_reason == "tool_use" and m.role == "assistant"
        use = [b for b in m.content if b.type == "tool_use"][0]
        assert use.name == "get_weather"
        check(use.input)
    history = [{"role": "user", "content": ASK}, {"role": "assistant", "content": m.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "22 degrees"}]}]
    answer = claude.messages.create(model=SMOL, max_tokens=30, system="Answer briefly.", messages=history, tools=TOOLS,
                                    tool_choice={"type": "none"}, extra_body={"temperature": 0})
    assert answer.content[0].type == "text" and answer.content[0].text
    assert answer.stop_reason in ("end_turn", "max_tokens")
    count = claude.messages.count_tokens(model=SMOL, system="Answer briefly.", messages=history, tools=TOOLS,
                                         tool_choice={"type": "none"})
    assert count.input_tokens == answer.usage.input_tokens


def test_anthropic_structured_output():
    import jsonschema
    for temperature in (0.0, 1.0):
        m = claude.messages.create(model=MODEL, max_tokens=120, messages=[{"role": "user", "content": "Make up a person."}],
                                   output_config={"format": {"type": "json_schema", "schema": PERSON}},
                                   extra_body={"temperature": temperature})
        jsonschema.validate(json.loads(m.content[0].text), PERSON)


def test_anthropic_stream_adds_up_to_the_message():
    kwargs = dict(model=SMOL, max_tokens=100, messages=[{"role": "user", "content": ASK}], tools=TOOLS,
                  tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0})
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    got = [(b.type, getattr(b, "name", None), getattr(b, "input", None)) for b in final.content]
    want = [(b.type, getattr(b, "name", None), getattr(b, "input", None)) for b in whole.content]
    assert got == want and final.stop_reason == whole.stop_reason == "tool_use"
    with claude.messages.stream(model=SMOL, max_tokens=12, messages=[{"role": "user", "content": "Say hello."}],
                                extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
    plain = claude.messages.create(model=SMOL, max_tokens=12, messages=[{"role": "user", "content": "Say hello."}],
                                   extra_body={"temperature": 0})
    assert text == plain.content[0].text


@pytest.mark.parametrize("kwargs,param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"extra_body": {"temperature": 1.5}}, "temperature"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "frobnicate"}}}}, "output_config.format.schema"),
    ({"tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "tools[0].input_schema"),
    ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "1"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({"stop_sequences": [""]}, "stop_sequences"),
    ({"tools": TOOLS, "stop_sequences": ["."]}, "stop_sequences"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
])
def test_anthropic_errors_name_the_field(kwargs, param):
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(**{"model": SMOL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}], **kwargs})
    assert e.value.body["error"]["param"] == param, e.value.body
    # Anthropic's error shape: a top-level type.
    assert e.value.body["type"] == "error", e.value.body


def test_counting_tokens_is_not_refused_for_the_context():
    long = "word " * 9000  # beyond the model's context of 8192
    count = claude.messages.count_tokens(model=SMOL, messages=[{"role": "user", "content": long}])
    assert count.input_tokens > 8192
