from megatron_optiml.tokenizer import EOS_ID, PAD_ID, load_hf_tokenizer, load_opt_tokenizer


def test_opt_ids_without_bos():
    tok = load_opt_tokenizer()
    assert tok.encode("Hello world").ids == [31414, 232]
    assert tok.token_to_id("</s>") == EOS_ID == 2
    assert tok.token_to_id("<pad>") == PAD_ID == 1
    assert tok.encode("a</s>").ids[-1] == 2  # the special token is not split into bytes


def test_hf_tokenizer_matches():
    hf = load_hf_tokenizer()
    tok = load_opt_tokenizer()
    assert hf("Hello world")["input_ids"] == [31414, 232]
    assert hf.eos_token_id == 2 and hf.pad_token_id == 1
    text = "Caf\u00e9 \u2028 line\r\nnext \u65e5\u672c  spaces"
    assert hf(text)["input_ids"] == tok.encode(text).ids
    assert tok.decode(tok.encode(text).ids) == text
