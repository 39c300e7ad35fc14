import torch
from transformers import AutoTokenizer

from larft.awareness import (
    IGNORE_INDEX, awareness_loss, build_awareness_batch, counting_answer, counting_instruction, parse_count,
)
from larft.length import count_chars, count_words


def test_examples_unmask_only_the_label_tokens(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["the history of tea is long", "我爱北京", "a b c"]
    units = ["words", "words", "chars"]
    batch = build_awareness_batch(texts, units, tok)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i, (text, unit) in enumerate(zip(texts, units)):
        count = count_words(text) if unit == "words" else count_chars(text)
        # the tiny ChatML template ends a turn with <|im_end|>, which is also its eos
        answer_ids = tok(counting_answer(count, unit), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert kept == answer_ids  # the label is exactly <word_count>N</word_count> + end of turn
        assert labels[-len(answer_ids):].tolist() == answer_ids  # at the end (left padding)
        row = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        decoded = tok.decode(row)
        assert text in decoded and decoded.startswith("<|im_start|>user")  # chat template used
    assert counting_answer(6, "words") == "<word_count>6</word_count>"
    assert count_words(texts[0]) == 6


def test_long_texts_are_cut_and_the_cut_text_is_counted(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = " ".join(["tea"] * 50)
    batch = build_awareness_batch([text], ["words"], tok, max_text_tokens=10)
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    cut = tok.decode(tok(text, add_special_tokens=False)["input_ids"][:10])
    assert 0 < count_words(cut) < 50
    assert tok.decode(kept[:-1]) == f"<word_count>{count_words(cut)}</word_count>"
    assert cut in tok.decode(batch["input_ids"][0]) and text not in tok.decode(batch["input_ids"][0])


def test_parse_count():
    assert parse_count("<word_count>42</word_count>") == 42
    assert parse_count("Sure! <word_count> 7 </word_count> done") == 7
    assert parse_count("<word_count>seven</word_count>") is None
    assert parse_count("42") is None
    assert parse_count("<char_count>9</char_count>", "chars") == 9
    assert "Count the words" in counting_instruction("x")


def test_loss_is_cross_entropy_on_labels_only(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = build_awareness_batch(["one two three", "four five"], ["words", "words"], tok)
    loss = awareness_loss(model, **batch)
    # reference: full-sequence logits, the usual shifted CE over unmasked labels
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.isfinite(loss)
    assert torch.allclose(loss, ref, atol=1e-5)
    empty = {k: v.clone() for k, v in batch.items()}
    empty["labels"][:] = IGNORE_INDEX
    assert awareness_loss(model, **empty).item() == 0.0  # guarded: no NaN


def test_length_grouping_gives_the_same_loss_and_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    texts = ["one", "one two three four five six seven", "a b", "tea " * 20, "x y z", "the history of tea"]
    batch = build_awareness_batch(texts, ["words"] * 6, tok)
    results = []
    for chunks in (1, 2, 3, 6):
        model.zero_grad()
        loss = awareness_loss(model, **batch, chunks=chunks)
        loss.backward()
        results.append((loss.detach(), model.model.embed_tokens.weight.grad.clone()))
    for loss, grad in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-5)
        assert torch.allclose(grad, results[0][1], atol=1e-6)


def test_shared_prefix_path_gives_the_same_loss_and_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    texts = ["one", "one two three four five six seven", "a b", "tea " * 20, "x y z", "the history of tea", "w", "v u"]
    batch = build_awareness_batch(texts, ["words"] * 8, tok)
    assert int(batch["prefix_length"].min()) == int(batch["prefix_length"].max()) > 10
    results = {}
    for name, kwargs in {"plain": {}, "cached": {"prefix_length": batch["prefix_length"]}}.items():
        for chunks in (1, 2):
            model.zero_grad()
            loss = awareness_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], chunks=chunks,
                                  **kwargs)
            loss.backward()
            results[name, chunks] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    reference_loss, reference_grad = results["plain", 1]
    for loss, grad in results.values():
        assert torch.allclose(loss, reference_loss, atol=1e-5)
        assert torch.allclose(grad, reference_grad, atol=1e-5)
    # mixed units have different prompts: the group falls back to the plain path, still exact
    mixed = build_awareness_batch(["a b", "c d e"], ["words", "chars"], tok)
    plain = awareness_loss(model, mixed["input_ids"], mixed["attention_mask"], mixed["labels"])
    assert torch.allclose(awareness_loss(model, **mixed), plain, atol=1e-6)


def _tokenizer_with_turn_end(tiny_model_dir, end="<|end|>"):
    """A tokenizer whose chat template ends an assistant turn with `end`, not with its eos."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": [end]})
    tok.chat_template = (
        "{% if shout %}LOUD {% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        + end + "\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def test_the_label_ends_with_the_templates_end_of_turn_not_eos(tiny_model_dir):
    from larft.awareness import turn_end

    tok = _tokenizer_with_turn_end(tiny_model_dir)
    assert turn_end(tok) == "<|end|>" and tok.eos_token == "<|im_end|>"
    batch = build_awareness_batch(["one two three"], ["words"], tok)
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert kept[-1] == tok.convert_tokens_to_ids("<|end|>") != tok.eos_token_id
    assert tok.decode(kept) == "<word_count>3</word_count><|end|>"
    # no template: the raw-text prompt and eos, as the official release does
    tok.chat_template = None
    assert turn_end(tok) == tok.eos_token


def test_chat_template_kwargs_reach_the_counting_prompt(tiny_model_dir):
    tok = _tokenizer_with_turn_end(tiny_model_dir)
    plain = tok.decode(build_awareness_batch(["a b"], ["words"], tok)["input_ids"][0])
    loud = tok.decode(build_awareness_batch(["a b"], ["words"], tok, chat_template_kwargs={"shout": True})["input_ids"][0])
    assert "LOUD" not in plain and "LOUD" in loud


def test_shared_prefix_path_uses_the_current_cache_argument(tiny_model_dir):
    """transformers 5.24 deprecates `past_key_values=` (removed in 5.40): the awareness pass must
    neither warn nor silently fall back to the plain computation."""
    import warnings

    from larft.awareness import _cached_prefix_loss, _shared_prefix
    from tiny import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = tiny_model(tok)
    batch = build_awareness_batch(["one two three four", "five six"], ["words", "words"], tok)
    ids, mask, lab = batch["input_ids"], batch["attention_mask"], batch["labels"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        prefix = _shared_prefix(ids, mask, batch["prefix_length"])
        assert prefix is not None
        cached = _cached_prefix_loss(model, ids, mask, lab, prefix)
        assert cached is not None  # the cache came back: no silent fallback
        full = awareness_loss(model, ids, mask, lab, batch["prefix_length"], chunks=1)
    plain = awareness_loss(model, ids, mask, lab, None, chunks=1)
    assert torch.allclose(full, plain, atol=1e-5)


def test_predictions_are_each_rows_argmax_at_its_label_positions(tiny_model_dir):
    """The teacher-forced counts the trainer logs (awareness_count_error) come from the right rows,
    whatever the length grouping and prefix sharing did to the order."""
    from tiny import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = tiny_model(tok)
    texts = ["one two three four five six seven", "a", "tea is long and warm", "b c", "x y z w v", "q"]
    batch = build_awareness_batch(texts, ["words"] * len(texts), tok)
    predicted: dict[int, list[int]] = {}
    awareness_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], batch["prefix_length"],
                   chunks=3, predictions=predicted)
    assert sorted(predicted) == list(range(len(texts)))
    for i in range(len(texts)):
        mask = batch["attention_mask"][i].bool()
        ids, lab = batch["input_ids"][i][mask][None], batch["labels"][i][mask]
        logits = model(input_ids=ids).logits[0, :-1]
        want = logits.argmax(-1)[lab[1:] != IGNORE_INDEX].tolist()
        assert predicted[i] == want


def test_number_only_loss_marks_exactly_the_count_tokens(tiny_model_dir):
    """awareness_loss_on="number": the same examples, a mask on the tokens that spell N."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["the history of tea is long", " ".join(["w"] * 128), "a b c"]
    units = ["words", "words", "chars"]
    label = build_awareness_batch(texts, units, tok)
    number = build_awareness_batch(texts, units, tok, loss_on="number")
    assert "loss_mask" not in label  # the method's loss: every label token
    for key in label:
        assert torch.equal(label[key], number[key])  # same tokens, same labels
    for i, want in enumerate([6, 128, 3]):
        marked = number["input_ids"][i][number["loss_mask"][i]]
        assert tok.decode(marked) == str(want)
        assert (number["labels"][i][number["loss_mask"][i]] != IGNORE_INDEX).all()  # only inside the label


def test_number_only_loss_is_cross_entropy_on_the_count_tokens(tiny_model_dir):
    from tiny import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = tiny_model(tok)
    texts = ["one two three four five six seven", "a", "tea is long and warm", "b c", "x y z w v", "q"]
    batch = build_awareness_batch(texts, ["words"] * len(texts), tok, loss_on="number")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    only_number = batch["labels"].masked_fill(~batch["loss_mask"], IGNORE_INDEX)
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), only_number[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    every = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    for chunks in (1, 3):  # with and without the shared-prefix path's grouping
        predicted: dict[int, list[int]] = {}
        loss = awareness_loss(model, **batch, chunks=chunks, predictions=predicted)
        assert torch.allclose(loss, ref, atol=1e-5) and not torch.allclose(loss, every, atol=1e-3)
        # the logged counts still read the whole label (tags included)
        assert all(len(predicted[i]) == int((batch["labels"][i] != IGNORE_INDEX).sum()) for i in range(len(texts)))


def test_number_mask_without_offsets_comes_from_decoding_the_same_label(tiny_model_dir):
    """A slow tokenizer has no offsets: the mask is found on the same label ids, by decoding."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    class NoOffsets:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, *args, **kwargs):
            if kwargs.get("return_offsets_mapping"):
                raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
            return self.inner(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    texts = ["the history of tea is long", " ".join(["w"] * 128)]
    fast = build_awareness_batch(texts, ["words"] * 2, tok, loss_on="number")
    slow = build_awareness_batch(texts, ["words"] * 2, NoOffsets(tok), loss_on="number")
    for key in fast:
        assert torch.equal(fast[key], slow[key])


def test_the_logged_count_is_read_at_the_count_positions_only(tiny_model_dir):
    """awareness_count_error reads the model's count where the label spells it: wrong tags do not
    hide a right count (number-only training never teaches the tags), a wrong digit is read as such."""
    from larft.awareness import read_count

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["one two three four five six seven eight nine ten eleven twelve", "a b c"]
    batch = build_awareness_batch(texts, ["words", "chars"], tok, loss_on="number")
    for i, truth in enumerate([12, 3]):
        label = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        is_count = batch["loss_mask"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        filler = tok("x", add_special_tokens=False)["input_ids"][0]
        wrong_tags = [t if c else filler for t, c in zip(label, is_count)]
        assert read_count(tok, label, wrong_tags) == (truth, truth)
        wrong = int(str(truth)[:-1] + str((truth + 5) % 10))  # the last digit off by 5
        other = tok(str(wrong), add_special_tokens=False)["input_ids"]
        assert len(other) == sum(is_count)  # digits are single tokens here: the same positions
        it = iter(other)
        assert read_count(tok, label, [next(it) if c else t for t, c in zip(label, is_count)]) == (truth, wrong)
        assert read_count(tok, label, [filler] * len(label)) == (truth, None)  # no number: an error of 1
    assert read_count(tok, tok("no count here", add_special_tokens=False)["input_ids"], [0, 0, 0]) is None


def test_release_prompt_style_is_the_official_raw_text_then_label_then_eos(tiny_model_dir):
    from larft.awareness import RELEASE_PROMPT

    import pytest

    tok = _tokenizer_with_turn_end(tiny_model_dir)  # a template whose turn end is not eos: the release ignores it
    batch = build_awareness_batch(["one two three"], ["words"], tok, prompt_style="release")
    row = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert tok.decode(kept) == "<word_count>3</word_count>" + tok.eos_token
    assert tok.decode(row) == RELEASE_PROMPT.format(text="one two three") + "<word_count>3</word_count>" + tok.eos_token
    with pytest.raises(ValueError, match="words only"):
        build_awareness_batch(["abc"], ["chars"], tok, prompt_style="release")
