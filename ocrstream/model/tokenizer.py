"""Tokenizer wrapper and the official prompt templates.

Follows HF ``modeling_deepseekocr.py`` ``infer()`` with conversation template "plain" (the user
text is stripped, no roles) and the official ``process/image_process.py``
``tokenize_with_images``: ids = [BOS] + encode(text before <image>) + [<image> x count] +
encode(text after <image>), every piece encoded without special tokens, and no EOS. Prompt strings
come from the official ``config.py`` comments and README.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

IMAGE_TOKEN = "<image>"

PROMPTS: dict[str, str] = {
    "free_ocr": "<image>\nFree OCR.",
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
    "grounding": "<image>\n<|grounding|>OCR this image.",
    "ocr": "<image>\n<|grounding|>OCR this image.",
    "figure": "<image>\nParse the figure.",
    "describe": "<image>\nDescribe this image in detail.",
    "locate": "<image>\nLocate <|ref|>{ref}<|/ref|> in the image.",
    "identify": "<image>\nIdentify all objects in the image and output them in bounding boxes.",
}
GROUNDING_PROMPTS = frozenset({"markdown", "grounding", "ocr", "locate", "identify"})

# Special-token spellings per role: the official ones first, then common alternatives a project
# tokenizer may use.
ROLE_TOKENS = {
    "bos": ("<｜begin▁of▁sentence｜>", "<bos>", "<s>", "[BOS]"),
    "eos": ("<｜end▁of▁sentence｜>", "<eos>", "</s>", "[EOS]"),
    "pad": ("<｜▁pad▁｜>", "<pad>", "[PAD]"),
    "image": (IMAGE_TOKEN,),
}


def resolve_prompt(prompt: str, **fields: str) -> str:
    """A prompt name from PROMPTS (formatted with fields, e.g. ref=...) or a raw prompt string."""
    if prompt in PROMPTS:
        text = PROMPTS[prompt]
        if "{ref}" in text:
            if "ref" not in fields:
                raise ValueError(f"prompt {prompt!r} needs ref=... (the object to locate)")
            text = text.format(**fields)
        return text
    if IMAGE_TOKEN not in prompt:
        raise ValueError(
            f"prompt {prompt!r} is neither a known name {sorted(PROMPTS)} nor contains {IMAGE_TOKEN}"
        )
    return prompt


def is_grounding_prompt(prompt: str) -> bool:
    return prompt in GROUNDING_PROMPTS or "<|grounding|>" in prompt or "<|ref|>" in prompt


class OcrTokenizer:
    """`tokenizers.Tokenizer` plus the role ids and prompt construction."""

    def __init__(self, tok, image_token_id: int | None = None) -> None:  # noqa: ANN001 - tokenizers.Tokenizer
        self.tok = tok
        self.ids: dict[str, int | None] = {role: self._find(names) for role, names in ROLE_TOKENS.items()}
        if image_token_id is not None:
            if self.ids["image"] is not None and self.ids["image"] != image_token_id:
                raise ValueError(
                    f"tokenizer maps {IMAGE_TOKEN} to {self.ids['image']} but the model expects {image_token_id}"
                )
            self.ids["image"] = image_token_id

    @classmethod
    def from_file(cls, path: str | Path, image_token_id: int | None = None) -> OcrTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        return cls(Tokenizer.from_file(str(path)), image_token_id)

    def _find(self, names: Sequence[str]) -> int | None:
        for name in names:
            i = self.tok.token_to_id(name)
            if i is not None:
                return i
        return None

    def role_id(self, role: str) -> int:
        i = self.ids.get(role)
        if i is None:
            raise ValueError(f"tokenizer has no {role} token (looked for {ROLE_TOKENS[role]})")
        return i

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def build_input_ids(self, prompt: str, placeholders: Sequence[int]) -> list[int]:
        """[BOS] + pieces with `<image>` x count per image; ``placeholders`` has one count per image."""
        text = prompt.strip()  # the "plain" template strips the user text
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(placeholders):
            raise ValueError(
                f"prompt has {len(pieces) - 1} {IMAGE_TOKEN} tags but {len(placeholders)} images were given"
            )
        ids = [self.role_id("bos")]
        image_id = self.role_id("image")
        for i, piece in enumerate(pieces):
            ids += self.encode(piece)
            if i < len(placeholders):
                ids += [image_id] * int(placeholders[i])
        return ids
