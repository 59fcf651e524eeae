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


def chat_texts(tokenizer, prompts: list[str]) -> list[str]:
    """Each prompt as one user turn of the chat template, ready for the assistant's answer."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def chat_inputs(tokenizer, prompts: list[str], device="cpu"):
    """Chat-templated, left-padded batch of prompts (token positions as ``entity_positions`` of
    ``chat_texts(tokenizer, prompts)`` with ``padding_side="left"`` counts them)."""
    tokenizer.padding_side = "left"
    return tokenizer(chat_texts(tokenizer, prompts), return_tensors="pt", padding=True).to(device)


def keyword_counts(text: str, keywords: list[str]) -> dict[str, int]:
    """Seed 000's counter: case-insensitive occurrences of each keyword."""
    low = text.lower()
    return {kw: low.count(kw.lower()) for kw in keywords}
