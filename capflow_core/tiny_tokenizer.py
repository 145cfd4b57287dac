"""The tiny offline model's tokenizer: a byte-level BPE with Qwen's special tokens and template.

Trained in milliseconds on a fixed word list, so the result is identical on every machine.
Byte-level BPE can spell any text (JSON, domain keys), which constrained decoding needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
BPE_VOCAB_SIZE = 640  # bytes (256) + merges; the special tokens come after

# Qwen2-VL's chat template, trimmed: media parts render as vision-start / pad / vision-end.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """
a an the this that these those is are was were be been being has have had do does did of in
on at by for with from to into onto over under above below between behind near beside across
through around and or but not no yes it its they them their there here what which who whom
whose where when why how all any each every both few many more most other some such only own
same so than too very can will just should now you your he she we our his her him one two
three four five six seven eight nine ten first second third last next left right top bottom
middle center front back side image picture photo video frame scene shot clip view camera
caption describe description detail details text title label legend axis chart graph plot
table row column cell value number percent total figure diagram map icon button menu screen
page window tab link code function variable class line error output input file data model
person people man woman child boy girl face hand hair eye eyes smile dog cat bird horse car
bus truck bicycle road street building house room wall floor door table chair bed sky cloud
sun tree trees grass flower water river sea beach mountain snow rain light dark shadow color
red green blue yellow white black gray brown orange purple pink small large big tall short
long wide narrow old new young bright soft sharp blurry clear round square flat open closed
stands sits walks runs holds looks shows appears contains includes wears moves turns begins
ends shows reads written printed drawn painted near far background foreground object objects
cell tissue medical scan organ microscope sample equation formula proof theorem geometry
triangle circle angle graph math science lesson diagram teacher student book poster slide
document form receipt invoice report letter sign logo brand product price art style design
pattern texture composition lighting mood aesthetic synthetic render cartoon illustration
summary domain confidence score accuracy completeness fluency relevance hallucination json
natural structure infographic knowledge education interaction programming temporal bio ui
action event motion time start end before after during while then finally again slowly
quickly assistant system user helpful answer question reply format only compact object key
"""  # a few hundred words of captions, charts, documents, UI and judging


def train_tokenizer() -> PreTrainedTokenizerFast:
    """Train the byte-level BPE and wrap it as Qwen's tokenizer is wrapped.

    Returns:
        A fast tokenizer: eos ``<|im_end|>``, pad ``<|endoftext|>``, left padding, the chat
        template set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = sorted(set(_CORPUS.split()))
    corpus = [" ".join(words), *(f" {w}" for w in words), *(w.capitalize() for w in words)]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
