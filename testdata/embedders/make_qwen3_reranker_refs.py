"""Reference scores of the Qwen3-Reranker recipe on the tiny random Qwen3 causal LM of
testdata/tiny/hf/qwen3 (SmolLM2 tokenizer), computed the way the Qwen3-Reranker model card does:
prefix + "<Instruct>: …\n<Query>: …\n<Document>: …" + suffix, the last position's logits of
"yes" and "no", score = softmax([no, yes])[yes]. Written to qwen3-reranker-tiny.json.

    python testdata/embedders/make_qwen3_reranker_refs.py   # needs torch and transformers
"""
import json
import pathlib

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

here = pathlib.Path(__file__).resolve().parent
model_dir = here.parent / "tiny" / "hf" / "qwen3"
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

prefix = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct '
          'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
default_instruction = "Given a web search query, retrieve relevant passages that answer the query"
yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
prefix_ids = tok.encode(prefix, add_special_tokens=False)
suffix_ids = tok.encode(suffix, add_special_tokens=False)

query = "What is the capital of France?"
documents = [
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Berlin is the capital of Germany.",
    "",
    "ünïcödé — emoji 🙂 and code: def f(x): return x",
]
cases = []
for instruction in [None, "Given a question, find the passage that answers it"]:
    scores, ids = [], []
    for doc in documents:
        text = f"<Instruct>: {instruction or default_instruction}\n<Query>: {query}\n<Document>: {doc}"
        seq = prefix_ids + tok(text, add_special_tokens=True)["input_ids"] + suffix_ids
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        pair = torch.log_softmax(torch.stack([logits[no], logits[yes]]), dim=0)
        scores.append(pair[1].exp().item())
        ids.append(seq)
    cases.append({"instruction": instruction, "scores": scores, "ids": ids})

out = {
    "about": __doc__.strip().splitlines()[0],
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    "yes_id": yes,
    "no_id": no,
    "query": query,
    "documents": documents,
    "cases": cases,
}
(here / "qwen3-reranker-tiny.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps({k: v for k, v in out.items() if k != "cases"}), [c["scores"] for c in cases])
