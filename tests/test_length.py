import pytest

from larft.length import count_chars, count_tokens, count_words, final_text, measure, parse_delimiters


def test_count_words_follows_the_larft_regex():
    assert count_words("Hello, world!") == 2
    assert count_words("don't stop well-known 2024 items") == 5  # apostrophes/hyphens/digits inside words
    assert count_words("... --- !!!") == 1  # "---" is a run of hyphens: the paper's regex counts it
    assert count_words("") == 0
    assert count_words("   \n\t ") == 0


def test_cjk_characters_are_one_word_each():
    assert count_words("我爱北京") == 4
    assert count_words("我爱 Python 和 AI") == 5


def test_chars_ignore_whitespace():
    assert count_chars("a b\nc\t d") == 4
    assert count_chars("中文 字") == 3


def test_final_text_strips_think_and_markers():
    assert final_text("<think>let me count 1 2 3</think>The answer is short.") == "The answer is short."
    assert final_text("reasoning here</think>\nFinal words") == "Final words"
    assert final_text("<|im_start|>assistant\nHi there<|im_end|>") == "Hi there"
    assert measure("<think>one two three four</think> five six") == 2


def test_tokens_need_a_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "describe the history of tea"
    assert count_tokens(text, tok) == len(tok(text, add_special_tokens=False)["input_ids"])
    assert measure(text, "tokens", tokenizer=tok) == count_tokens(text, tok)
    import pytest

    with pytest.raises(ValueError, match="tokenizer"):
        measure(text, "tokens")
    with pytest.raises(ValueError, match="unknown unit"):
        measure(text, "lines")


def test_unclosed_reasoning_runs_to_the_end():
    assert final_text("<think>I should write about tea, think think") == ""
    assert measure("<think>cut off while reasoning") == 0  # "think" is not a word of the answer
    assert final_text("Answer first <think>then reasoning that never ends") == "Answer first"
    assert final_text("<think>a</think>Done. <think>again") == "Done."


def test_reasoning_delimiters_are_configurable():
    assert parse_delimiters("<think>,</think>") == (("<think>", "</think>"),)
    assert parse_delimiters("none") == ()
    pairs = parse_delimiters("<think>,</think>; <reasoning>,</reasoning>")
    assert final_text("<reasoning>x y</reasoning>Hello <think>a", pairs) == "Hello"
    assert final_text("<think>kept as text</think>", ()) == "<think>kept as text</think>"
    with pytest.raises(ValueError, match="start,end"):
        parse_delimiters("<think>")
