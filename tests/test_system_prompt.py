"""One system-message option, used alike by rollouts, counting examples, the length check and eval."""

from larft.awareness import prompt_parts
from larft.eval.runner import EvalSettings
from larft.generation import SYSTEM_PROMPTS, render_chat, with_system_prompt
from larft.run_setup import with_system_prompts
from tiny import tiny_tokenizer

USER = [{"role": "user", "content": "Describe tea in about 20 words."}]


def test_with_system_prompt_choices():
    assert with_system_prompt(USER, "default") == USER  # the template decides
    assert with_system_prompt(USER, "none") == [{"role": "system", "content": ""}, *USER]
    assert with_system_prompt(USER, "short")[0]["content"] == SYSTEM_PROMPTS["short"]
    assert with_system_prompt(USER, "Be brief.")[0] == {"role": "system", "content": "Be brief."}
    own = [{"role": "system", "content": "mine"}, *USER]
    assert with_system_prompt(own, "short") == own  # a conversation's own system message is kept
    assert with_system_prompt("plain text prompt", "short") == "plain text prompt"


def test_training_rows_counting_prompts_and_eval_use_the_same_message():
    tok = tiny_tokenizer()
    rows = with_system_prompts([{"prompt": USER, "target": 20}], "Be brief.")
    assert rows[0]["prompt"][0]["content"] == "Be brief." and rows[0]["target"] == 20
    assert "Be brief." in render_chat(tok, rows[0]["prompt"])
    before, _ = prompt_parts(tok, "words", system_prompt="Be brief.")
    assert "Be brief." in before and "Be brief." not in prompt_parts(tok, "words")[0]
    # eval: a changed system message is another decoding, never a cache hit of the old one
    assert EvalSettings().decoding_key() != EvalSettings(system_prompt="none").decoding_key()


def test_smollm2_style_default_system_prompt_is_replaced_not_added():
    tok = tiny_tokenizer()
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant "
                         "named SmolLM, trained by Hugging Face<|im_end|>\n{% endif %}" + tok.chat_template)
    assert "SmolLM" in render_chat(tok, USER)
    assert "SmolLM" not in render_chat(tok, with_system_prompt(USER, "none"))
    assert len(tok(render_chat(tok, with_system_prompt(USER, "none")))["input_ids"]) < \
        len(tok(render_chat(tok, USER))["input_ids"])
