"""Tiny models and a real BPE tokenizer with a chat template, built in-test (no downloads).

The tokenizer is a BPE model trained by the ``tokenizers`` library on a few GSM8K-style lines
(vocabulary ~ 120), with a Jinja chat template that honours ``enable_thinking``.
"""
import torch

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>",
            "<|end|>", "<|nothink|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}<|nothink|>{% endif %}{% endif %}")
CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? #### 72",
    "Weng earns 12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "What is 2 + 3? The answer is 5. #### 5 \\boxed{5} 0123456789",
]


def tokenizer(vocab_size: int = 120, chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                        show_progress=False))
    from tokenizers import processors

    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", unk_token="<|unk|>",
                                   additional_special_tokens=SPECIALS[4:])
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def model(tok, *, arch: str = "llama", dtype=torch.float32, seed: int = 0, hidden: int = 16):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        cfg._attn_implementation = "eager"
        net = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=hidden, n_layer=1, n_head=2,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        cfg._attn_implementation = "eager"
        net = GPT2LMHeadModel(cfg)
    return net.to(dtype).eval()


def model_dir(path, *, arch: str = "llama", generation_config: dict | None = None):
    """Save a tiny model + tokenizer to ``path`` (optionally with a non-neutral generation_config)."""
    tok = tokenizer()
    net = model(tok, arch=arch)
    if generation_config:
        for k, v in generation_config.items():
            setattr(net.generation_config, k, v)
    net.save_pretrained(path)
    tok.save_pretrained(path)
    return path


GSM8K_ROWS = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?", "answer": "72"},
    {"question": "Weng earns 12 an hour. How much for 50 minutes?", "answer": "10"},
    {"question": "What is 2 + 3?", "answer": "5"},
    {"question": "What is 4 + 4?", "answer": "8"},
]
