"""Slimmable model families and the registry (see README.md here); the registry imports each family's module."""

from tailor.models.registry import create_model, list_models, register_model
from tailor.models.resnet import ElasticResNet
from tailor.models.small_cnn import SmallCNN
from tailor.models.vit import ElasticViT

__all__ = ["ElasticResNet", "ElasticViT", "SmallCNN", "create_model", "list_models", "register_model"]
