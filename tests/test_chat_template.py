"""tokenizers/chat_template.py against transformers' apply_chat_template (which runs Jinja): the real
chat templates of Llama 3, Llama 3.2, Qwen3 and SmolLM2, and one written here to use every construct
the renderer supports, over fixed and random conversations; what it does not support is refused."""

from __future__ import annotations

import pytest
from chat_templates import LLAMA3, LLAMA32, OURS, QWEN3, SMOLLM2
from helpers import reference, require
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers.chat_template import MAX_TEXT_CHARS, ChatTemplate, ChatTemplateError

transformers = reference("transformers")
tokenizers = reference("tokenizers")

TEMPLATES = {"llama3": LLAMA3, "llama3.2": LLAMA32, "qwen3": QWEN3, "smollm2": SMOLLM2, "ours": OURS}
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "What is 2 + 2?\n"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}],
    [{"role": "user", "content": "Solve it"},
     {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 6."},
     {"role": "user", "content": "Thanks", "name": "ann"}],
    [{"role": "user", "content": "Think first"},
     {"role": "assistant", "content": "Done.", "reasoning_content": "easy", "n": 4}],
    [{"role": "user", "content": "東京の天気は？ 😀", "tool_calls": None},
     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather",
                                                                       "arguments": {"city": "Tokyo"}}}]},
     {"role": "tool", "content": "<tool_response>sunny</tool_response>"},
     {"role": "tool", "content": "22C"}, {"role": "skip", "content": "x"}],
]
WEATHER = [{"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A transformers tokenizer to call apply_chat_template on (its vocabulary does not matter here)."""
    require("jinja2")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.BPE()),
        bos_token="<|begin_of_text|>", eos_token="<|im_end|>")


def _both(hf_tokenizer, template: str, messages, **kwargs) -> tuple[str, str]:
    theirs = hf_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)
    ours = ChatTemplate(template).render(messages, bos_token="<|begin_of_text|>", eos_token="<|im_end|>",
                                         **kwargs)
    return ours, theirs


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_real_templates_render_as_transformers_does(hf_tokenizer, name, add_generation_prompt):
    for messages in CONVERSATIONS:
        ours, theirs = _both(hf_tokenizer, TEMPLATES[name], messages, date_string="26 Jul 2024",
                             add_generation_prompt=add_generation_prompt, extra={"a": 1})
        assert ours == theirs, (name, messages)


def test_template_variables_and_tools_reach_the_template(hf_tokenizer):
    messages = CONVERSATIONS[1]
    for kwargs in ({"enable_thinking": False}, {"enable_thinking": True}, {"tools": WEATHER}):
        for name in ("qwen3", "llama3.2"):
            ours, theirs = _both(hf_tokenizer, TEMPLATES[name], messages, add_generation_prompt=True,
                                 date_string="1 Jan 2025", **kwargs)
            assert ours == theirs, (name, kwargs)
    assert "<think>\n\n</think>" in _both(hf_tokenizer, QWEN3, messages, add_generation_prompt=True,
                                          enable_thinking=False)[0]


def test_llama32_asks_for_todays_date_when_none_is_given(hf_tokenizer):
    ours, theirs = _both(hf_tokenizer, LLAMA32, CONVERSATIONS[0], add_generation_prompt=True)
    assert ours == theirs or "Today Date:" in ours          # equal unless the day changes between the two


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_CONTENT = st.one_of(_TEXT, st.sampled_from(["<think>a</think>b", " x ", ""]))
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                  "content": _CONTENT}, optional={"name": _TEXT, "reasoning_content": _TEXT})


@pytest.mark.parametrize("name", TEMPLATES)
@settings(max_examples=60)
@given(messages=st.lists(_MESSAGE, min_size=1, max_size=5), add_generation_prompt=st.booleans())
def test_random_conversations_render_as_transformers_does(hf_tokenizer, name, messages,
                                                          add_generation_prompt):
    ours, theirs = _both(hf_tokenizer, TEMPLATES[name], messages, date_string="26 Jul 2024",
                         add_generation_prompt=add_generation_prompt)
    assert ours == theirs


@pytest.mark.parametrize("source", [
    "x\n  {% if true %}\n  y  \n  {%- endif %}\n\n",
    "{% for i in [1, 2] -%}\n {{ i }}\n{%- endfor %}\r\nend\r\n",
    "a {#- c -#} b {# c #}\n c\t{%+ if 1 %}d{% endif +%}\ne",
    "{{ 'a' }}  {% if 1 %}b{% endif %}\n   {{ '}}' }}{{ {'x': {'y': 1}} }}",
    "{% set x = 0 %}{% for i in [1,2,3] %}{{ x }}{% set x = i %}{% endfor %}|{{ x }}",
    "{% for i in [1,2,3] %}{% if i == 1 %}{% set y = 5 %}{% endif %}{{ y }},{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{{ loop.previtem is defined }}{% endfor %}",
    "{% set ns = namespace(a=1, b='x') %}{{ ns }} {{ ns.missing is defined }} {{ dict(k=[1]) }}",
    "{{ 'abc'[5] }}|{{ [1][3] is defined }}|{{ none }}|{{ 1.0 }}|{{ 'a' if false }}|{{ x is defined }}",
    "{{ '\\u00e9\\n\\'\\x41' }} {{ 'tab\\there' | length }} {{ 'a,b' .split(',') | last }}",
    "{{ range(3) | list }} {{ range(1, 7, 2) | join(',') }} {{ [3, 1] | first }} {{ 'ab' | reverse }}",
])
def test_whitespace_scoping_and_literals_follow_jinja(hf_tokenizer, source):
    ours, theirs = _both(hf_tokenizer, source, [{"role": "user", "content": "hi"}])
    assert ours == theirs


@pytest.mark.parametrize(("source", "problem"), [
    ("{% macro f() %}x{% endmacro %}", "macro"),
    ("{% include 'x.jinja' %}", "include"),
    ("{% set x %}block{% endset %}", "set name = value"),
    ("{% raw %}x{% endraw %}", "raw"),
    ("{{ messages | selectattr('role') }}", "filter 'selectattr'"),
    ("{{ x is callable }}", "test 'is callable'"),
    ("{{ 'a {}'.format(1) }}", "method .format()"),
    ("{{ lipsum() }}", "function 'lipsum'"),
    ("{{ messages.__class__ }}", "'__class__' is refused"),
    ("{% for m in messages recursive %}{% endfor %}", "recursive"),
    ("{% if x %}", "ends before"),
    ("{% endfor %}", "without its opening tag"),
    ("{{ x", "ends inside a tag"),
    ("{# never closed", "never closed"),
    ("{{ (1 }}", "unbalanced"),
])
def test_unsupported_constructs_are_refused_in_one_line_when_compiled(source, problem):
    with pytest.raises(ChatTemplateError, match=f"^chat template( line \\d+)?: .*{problem}") as caught:
        ChatTemplate(source)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("source", "problem"), [
    ("{{ raise_exception('no system role') }}", "refused the messages: no system role"),
    ("{{ undefined_name + 'x' }}", "'undefined_name' is undefined"),
    ("{{ messages[0].missing.deeper }}", "'missing' is undefined"),
    ("{{ 'x' * 3 }}", "works on numbers"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "at most"),
    ("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}", "loop steps"),
    ("{{ range(10 ** 9) }}", "range of"),
    ("{{ 2 ** 100000 }}", "exponent"),
    ("{% break %}", "outside a loop"),
])
def test_templates_that_fail_or_grow_without_bound_stop_with_one_line(source, problem):
    with pytest.raises(ChatTemplateError, match=problem):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])
    assert MAX_TEXT_CHARS >= 1 << 20


def test_messages_are_data_and_none_values_are_dropped():
    template = ChatTemplate("{{ messages[0].tool_calls is defined }} {{ messages[0] | tojson }}")
    assert template.render([{"role": "user", "content": "hi", "tool_calls": None}]) == \
        'False {"role": "user", "content": "hi"}'
    with pytest.raises(ChatTemplateError, match="message 0 holds a object"):
        template.render([{"role": "user", "content": object()}])
