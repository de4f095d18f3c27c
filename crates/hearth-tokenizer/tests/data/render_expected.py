"""Regenerates the expected renders in chat_cases.json.

Renders with Jinja2 configured as transformers' `apply_chat_template` does (ImmutableSandboxedEnvironment,
trim_blocks=True, lstrip_blocks=True, loopcontrols, its tojson/raise_exception/strftime_now, and
tools/documents passed as None when absent). strftime_now is pinned to a fixed date so the
Llama render is reproducible; the Rust test passes `date_string` for the same reason.

    python3 render_expected.py > chat_cases.json
"""
import json
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise RuntimeError(message)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: "01 Jan 2030"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo actuelle d'une ville — «quoted»",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}

CASES = [
    ("qwen2_5_chat_template.jinja", None, "<|im_end|>", {
        "messages": [{"role": "user", "content": "Hi there"}],
        "add_generation_prompt": True,
    }),
    ("qwen2_5_chat_template.jinja", None, "<|im_end|>", {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
            {"role": "tool", "content": "{\"temp\": 21.5}"},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "21.5°C and sunny."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER],
        "add_generation_prompt": True,
    }),
    ("llama3_2_chat_template.jinja", "<|begin_of_text|>", "<|eot_id|>", {
        "messages": [
            {"role": "system", "content": "  Be brief.  "},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": {"temp": 21, "sky": "clear"}},
        ],
        "tools": [WEATHER],
        "add_generation_prompt": True,
        "extra": {"date_string": "26 Jul 2024"},
    }),
    ("llama3_2_chat_template.jinja", "<|begin_of_text|>", "<|eot_id|>", {
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi! "}],
        "add_generation_prompt": False,
        "extra": {"tools_in_user_message": False},
    }),
]

out = []
for template, bos, eos, case in CASES:
    source = open(template, encoding="utf-8").read()
    special = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
    rendered = env.from_string(source).render(
        messages=case["messages"], tools=case.get("tools"), documents=None,
        add_generation_prompt=case["add_generation_prompt"], **special, **case.get("extra", {}))
    out.append({"template": template, "bos_token": bos, "eos_token": eos, **case, "rendered": rendered})
print(json.dumps({"cases": out}, ensure_ascii=False, indent=1))
