"""Drafters: everything that can propose tokens for the target to verify.

``ModelDrafter`` (a small draft model), ``quantized_copy`` (the target's own 4-bit copy, wrapped in a ModelDrafter),
``TwoLevelDrafter`` (a draft for the draft), ``PromptLookup`` (copying from the context), ``FeatureHeadDrafter`` (a head over the target's own features). Each proposes τ tokens with
their q and rolls back what the target rejected (``Drafter``).
"""
from .base import Drafter, ModelDrafter, as_drafter
from .feature_head import FeatureHead, FeatureHeadDrafter, load_feature_head
from .lookup import PromptLookup, find_continuation, lookup_tree
from .quantized import Int4Linear, Int8Linear, quantize_, quantized_copy, quantized_self_draft
from .two_level import TwoLevelDrafter

__all__ = ["Drafter", "ModelDrafter", "as_drafter", "PromptLookup", "find_continuation", "lookup_tree", "Int4Linear", "Int8Linear",
           "quantize_", "quantized_copy", "quantized_self_draft", "TwoLevelDrafter",
           "FeatureHead", "FeatureHeadDrafter", "load_feature_head"]
