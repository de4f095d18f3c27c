"""Builds the tiny random-weight cross-encoder in this directory and sentence-transformers'
scores for it (expected.json). Run with torch, transformers and sentence-transformers
installed (bench/embed_bench.sh's virtualenv has them): python make.py"""

import json
import os

import torch
from sentence_transformers import CrossEncoder
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("what is the capital of france paris city river cat dog sat on mat a an fast car engine "
         "library book read write model search vector token query document relevant answer").split()

vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?"] + WORDS + ["##s", "##ing", "##ed"]
tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
tok.normalizer = normalizers.BertNormalizer(lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
BertTokenizerFast(tokenizer_object=tok, model_max_length=48).save_pretrained(HERE)

torch.manual_seed(0)
config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=32, max_position_embeddings=48, num_labels=1, initializer_range=0.3)
model = BertForSequenceClassification(config).eval()
with torch.no_grad():  # transformers zeroes biases and sets LayerNorm to identity: randomise them too
    for name, p in model.named_parameters():
        if name.endswith("bias") or "LayerNorm" in name:
            p.add_(torch.randn_like(p) * 0.2)
model.save_pretrained(HERE, safe_serialization=True)

query = "what is the capital of france?"
docs = ["paris is the capital of france.", "the cat sat on the mat.", "a fast car engine",
        "", "reading a book in the library, writing answers", " ".join(["vector search"] * 30)]
ce = CrossEncoder(HERE, max_length=48, device="cpu")
scores = ce.predict([(query, d) for d in docs]).tolist()
# Batched, as predict() tokenizes (a lone call would drop an empty second text).
ids = ce.tokenizer([query] * len(docs), docs, truncation=True, max_length=48)["input_ids"]
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump({"query": query, "documents": docs, "scores": scores, "ids": ids,
               "note": "sentence-transformers CrossEncoder.predict (sigmoid), truncation to 48 tokens"}, f, indent=1)
