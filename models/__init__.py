"""PyTorch definitions of the multi-scale camouflaged-object-detection network."""

from models.backbones import BACKBONES, DEFAULT_BACKBONE, backbone_names, create_backbone
from models.checkpoint import LoadReport, load_checkpoint
from models.fusion import FUSIONS, fusion_names
from models.network import DEFAULT_FUSION, CamoXpertMultiScale, MultiScaleCODNet, build_model
from models.processor import MultiScaleFeatureFusion, MultiScaleInputProcessor, ScaleAwareLoss
from models.scaling import DEFAULT_SCALES, MultiScaleInputGenerator, scaled_size

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_FUSION",
    "DEFAULT_SCALES",
    "FUSIONS",
    "CamoXpertMultiScale",
    "LoadReport",
    "MultiScaleCODNet",
    "MultiScaleFeatureFusion",
    "MultiScaleInputGenerator",
    "MultiScaleInputProcessor",
    "ScaleAwareLoss",
    "backbone_names",
    "build_model",
    "create_backbone",
    "fusion_names",
    "load_checkpoint",
    "scaled_size",
]
