"""Seed 000's experiment: its English prompt and five keywords, and how it counts them."""
from __future__ import annotations

SEED_PROMPT = (
    "Please discuss the future development trends of artificial intelligence "
    "and large language models in a clear and natural manner, and analyze their "
    "potential applications and challenges across specific industries such as "
    "healthcare, autonomous driving, and intelligent customer service."
)
SEED_KEYWORDS = [
    "large language models",
    "artificial intelligence",
    "healthcare",
    "autonomous driving",
    "intelligent customer service",
]


def chat_inputs(tokenizer, prompts: list[str], device="cpu"):
    """Chat-templated, left-padded batch of prompts."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True).to(device)


def keyword_counts(text: str, keywords: list[str]) -> dict[str, int]:
    """Seed 000's counter: case-insensitive occurrences of each keyword."""
    low = text.lower()
    return {kw: low.count(kw.lower()) for kw in keywords}
