"""Models: timm backbones with MAE loading and token masking, DAN, EMMA, masked CoTEX."""
