"""A vision-language model's processor: loading it, and mapping a pixel limit onto its own resolution knob.

``load_processor`` loads through ``AutoProcessor``; where the processor class also holds a video
processor that cannot load here (transformers' video processors need torchvision, which is not
installed), it loads the same class without its video part, for images only, and says so.
``resolution`` turns ``ImageSpec.max_pixels`` into the keyword arguments of the processor call for
each family: Qwen2-VL image processors bound an image's pixels (``size.longest_edge`` is a pixel
count), Idefics3/SmolVLM ones bound its longest side in pixels and tile it; other processors (LLaVA's
resizes every image to one fixed size) have no such knob, and asking for one is an error, not ignored.
Imports transformers lazily; never imports Ray.
"""

from __future__ import annotations

import json
import math
from typing import Any

from invoicelab.backends.precision import pinned

CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
"""Files of a checkpoint that may name its processor class, in the order AutoProcessor reads them."""


def load_processor(path: str, revision: str | None = None) -> tuple[Any, str]:
    """The model's processor, set to pad on the left, and a note on what was left out ("" if nothing).

    Raises:
        ValueError: the processor has no chat template or no image processor.
    """
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    cls = processor_class(path, revision)
    note = ""
    if cls is not None and "video_processor" in cls.get_attributes() and not is_torchvision_available():
        processor = without_video(cls).from_pretrained(path, **pinned(revision))
        note = f"{cls.__name__} loaded without its video processor (needs torchvision): images only"
    else:
        processor = AutoProcessor.from_pretrained(path, **pinned(revision))
    if getattr(processor, "image_processor", None) is None:
        raise ValueError(f"{type(processor).__name__} of {path} has no image processor: not a vision-language model")
    if not getattr(processor, "chat_template", None):
        raise ValueError(f"{type(processor).__name__} of {path} has no chat template; transformers-vlm writes its "
                         "prompts (and image places) through it")
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor, note


def processor_class(path: str, revision: str | None = None) -> type | None:
    """The processor class a checkpoint names (its files' ``processor_class``, else its model type's)."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name
    from transformers.utils import cached_file

    for filename in CONFIG_FILES:
        found = cached_file(path, filename, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False, **pinned(revision))
        if found:
            with open(found, encoding="utf-8") as handle:
                name = json.load(handle).get("processor_class")
            if name:
                return processor_class_from_name(name)
    name = PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(path, **pinned(revision)).model_type)
    return processor_class_from_name(name) if name else None


def without_video(cls: type) -> type:
    """A subclass of a processor class that holds an image processor and a tokenizer, but no video processor.

    transformers finds a processor's parts from its ``__init__`` signature, so a signature without
    ``video_processor`` makes ``from_pretrained`` load (and the constructor check) only the other two;
    calls with images and text run the class's own code unchanged.
    """

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        cls.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                     chat_template=chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__,
                                       "__doc__": f"{cls.__name__} for images only (no video processor)."})


def resolution(image_processor: Any, max_pixels: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The processor-call keyword arguments that cap each image at ``max_pixels``, and what they mean.

    Args:
        image_processor: The processor's image processor.
        max_pixels: Most pixels per image (``ImageSpec.max_pixels``); None keeps the processor's default.

    Returns:
        ``(kwargs, used)``: keyword arguments for ``processor(...)`` and a description of the setting
        really used (family, knob, value), for ``info()``.

    Raises:
        ValueError: ``max_pixels`` is set but this image processor has no pixel limit to set (e.g. LLaVA).
    """
    size = _size_dict(image_processor)
    if _is_qwen2_vl(image_processor):
        family = "qwen2-vl"
        if max_pixels is not None:
            size = {"shortest_edge": min(size.get("shortest_edge") or max_pixels, max_pixels),
                    "longest_edge": max_pixels}
        return _chosen(family, "size.longest_edge (pixels per image)", size, max_pixels)
    if _is_idefics3(image_processor):
        family = "idefics3"
        if max_pixels is not None:
            tile = int(_size_dict(image_processor, "max_image_size")["longest_edge"])
            # whole tiles only: the processor rounds a side up to a multiple of the tile, which would pass the cap
            size = {"longest_edge": max(tile, math.isqrt(max_pixels) // tile * tile)}
        return _chosen(family, "size.longest_edge (pixels on the longest side; tiles of max_image_size)", size,
                       max_pixels)
    if max_pixels is not None:
        raise ValueError(f"image.max_pixels: {type(image_processor).__name__} has no per-image pixel limit to set "
                         f"(its size setting {size} is fixed by the model; Qwen2-VL and Idefics3/SmolVLM processors "
                         "have one); leave image.max_pixels unset for this model")
    return {}, {"family": "other", "knob": "none (the processor's own size)", "size": size, "max_pixels": None}


def _chosen(family: str, knob: str, size: dict[str, Any], max_pixels: int | None) -> tuple[dict, dict]:
    kwargs = {"size": size} if max_pixels is not None else {}
    return kwargs, {"family": family, "knob": knob, "size": size, "max_pixels": max_pixels}


def _is_qwen2_vl(image_processor: Any) -> bool:
    """Qwen2-VL-style: dynamic resolution in patches merged by ``merge_size``, bounded by pixel counts."""
    return hasattr(image_processor, "merge_size") and hasattr(image_processor, "temporal_patch_size")


def _is_idefics3(image_processor: Any) -> bool:
    """Idefics3/SmolVLM-style: resized to a longest side, then split into ``max_image_size`` tiles."""
    return hasattr(image_processor, "max_image_size") and hasattr(image_processor, "do_image_splitting")


def _size_dict(image_processor: Any, name: str = "size") -> dict[str, Any]:
    """An image processor's size setting as a plain dict (its set keys only)."""
    size = getattr(image_processor, name, None) or {}
    if not isinstance(size, dict):
        size = {k: getattr(size, k) for k in ("height", "width", "shortest_edge", "longest_edge")
                if getattr(size, k, None) is not None}
    return {k: v for k, v in size.items() if v is not None}
