"""The shipped prompt set: 48 chat prompts in six categories (chat, code, rewrite, summarize, qa,
math), 6 'train' and 2 'heldout' per category. Used by `autospec demo`, `autospec profile`,
`autospec distill` and the examples.

Contract: `load_prompts(split=None, path=None)` -> list of dicts {id, category, split, prompt};
`chat_token_ids(tokenizer, prompts)` applies the tokenizer's chat template (generation prompt
added) and returns each prompt's token ids.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Sequence


def load_prompts(split: str | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    text = Path(path).read_text(encoding="utf-8") if path else \
        (resources.files("autospec") / "data" / "prompts.jsonl").read_text(encoding="utf-8")
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"prompt file line {n} is not valid JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise ValueError(f"prompt file line {n} needs a non-empty 'prompt' string")
        item.setdefault("category", "default")
        item.setdefault("split", "train")
        item.setdefault("id", f"p{n}")
        items.append(item)
    return [p for p in items if split is None or p["split"] == split]


def chat_token_ids(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt as a one-turn user chat, ready for the assistant's reply."""
    out = []
    for text in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out
