"""Models: timm backbones with MAE loading and token masking, DAN, EMMA, masked CoTEX.

One family a file: ``backbone`` (any timm model; ViT token masking), ``checkpoint``
(MAE / affectkit / safetensors loading), ``facecnn`` (VGG-style CNNs for 48 px faces),
``dan`` (the frozen AffectNet branch),
``emma``, ``mtl`` (the Table 1 single-model baseline), ``cotex``, ``ensemble``.
"""

from .backbone import Backbone, create_backbone, prefixed_group_matcher, random_keep
from .checkpoint import load_pretrained, load_state_dict_file, save_checkpoint, save_mae_checkpoint
from .cotex import MaskedCoTEX
from .dan import DAN, ExpressionBranch, load_dan_checkpoint
from .emma import EMMA
from .ensemble import Ensemble, average_members, retune_au_thresholds
from .mtl import MultiTaskBaseline

__all__ = [
    "DAN", "EMMA", "Backbone", "Ensemble", "ExpressionBranch", "MaskedCoTEX",
    "MultiTaskBaseline", "average_members",
    "create_backbone", "load_dan_checkpoint", "load_pretrained", "load_state_dict_file",
    "prefixed_group_matcher", "random_keep", "retune_au_thresholds", "save_checkpoint",
    "save_mae_checkpoint",
]
