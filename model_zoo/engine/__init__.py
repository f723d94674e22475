"""The detector engine: plain PyTorch + torchvision ops, weight-compatible with mmdet 3.3."""
