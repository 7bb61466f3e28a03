"""Train a byte-level BPE tokenizer on the corpus and save it the way Hugging Face expects.

Byte-level BPE (GPT-2, Llama 3) starts from the 256 byte values, so any text can be
encoded and nothing is ever "unknown"; training then merges the most frequent adjacent
pairs until the vocabulary reaches `vocab_size`. Training is deterministic: the same
documents in the same order give the same merges (ties are broken by the pair itself).

Three small files make a directory loadable by `transformers.AutoTokenizer` and by vLLM:
- tokenizer.json          the whole tokenizer (merges, vocab, pre/post-processing)
- tokenizer_config.json   which Python class to use, special tokens, chat template
- special_tokens_map.json which string plays bos/eos/pad (older readers look here)
We write them by hand (not via transformers) so each field is visible and the bytes do not
depend on the installed transformers version.
"""

from __future__ import annotations

import json
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, PAD]  # ids 0, 1, 2: the trainer adds them first, in this order
DEFAULT_VOCAB_SIZE = 4096

# A minimal chat format so `/v1/chat/completions` works on vLLM and the teaching engine:
#   <s><|user|>\nHello</s>\n<|assistant|>\n
# The prompt starts with bos itself because chat endpoints tokenize the rendered template
# without adding special tokens again. Role markers are plain text (no extra vocabulary).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """A `tokenizers.Tokenizer` trained on `texts` (an iterable of strings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: "def" at the start of a file stays "def", not " def".
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge must be seen twice: no merges for one-off strings
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, always
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Like Llama: encoding a prompt "with special tokens" prepends <s>. transformers and
    # vLLM both honour this post-processor, so they agree on the prompt's token ids.
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return tok


def save_tokenizer(tok, out_dir: str | Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
        for t in SPECIAL_TOKENS
    }
    config = {
        # The generic fast tokenizer: everything it needs is inside tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "added_tokens_decoder": added,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # code: keep " ," and " ." exactly
        "chat_template": CHAT_TEMPLATE,
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json",
                {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})


def _write_json(path: Path, obj) -> None:
    # sort_keys + fixed indent: identical input gives identical bytes.
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")
