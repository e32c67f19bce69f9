"""Slimmable model families and the registry (see README.md here)."""

from tailor.models.registry import create_model, list_models, register_model
from tailor.models.resnet import ElasticResNet

__all__ = ["ElasticResNet", "create_model", "list_models", "register_model"]
