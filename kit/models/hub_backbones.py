"""The keras-hub backbone table: foundation image encoders (ViT, DINOv2, CLIP, SigLIP, Swin) kit can put under its head.

The second table beside :mod:`kit.models.backbones` (the ``keras.applications`` rows), for the optional ``hub`` extra
(``pip install kit[hub]``, keras-hub 0.29.1). A row says everything kit needs to build, feed, load and fine-tune one
keras-hub network (:mod:`kit.models.hub` builds it); adding one is a row here, nothing else in kit names it. This
module imports nothing (no keras_hub): ``kit list`` and the config loader read it on a machine without the extra.

Where the facts come from (keras_hub 0.29.1's ``src/models/<family>/<family>_presets.py``, read as text by
tests/test_hub_backbones.py, never imported by kit):

- ``preset`` and ``handle``: the preset's name and its ``kaggle_handle`` without ``kaggle://``, which is the Kaggle
  Models handle ``keras/<model>/keras/<variation>/<version>`` a kernel's ``model_sources`` takes and the path under
  the kagglehub cache (``<cache>/models/<handle>``) and under a kernel's input folder (``<model>/keras/<variation>/
  <version>``) where the preset folder lies.
- ``preset_class``: the ``keras_hub.models`` class the preset's ``config.json`` names; ``encoder`` the attribute of it
  that holds the image encoder (CLIP and SigLIP presets hold a text tower too; kit keeps only ``vision_encoder``);
  ``network_class`` the class of that image network, built directly from ``architecture`` for ``model.weights=none``
  (random initialisation, for tests and from-scratch training): the preset's own architecture. ``params`` is that
  network's ``count_params()`` at ``native_size``; the test builds every row and checks it, and where the preset is
  that network at that size (ViT, Swin) also against the presets file's ``params`` (DINOv2's count position embeddings
  for 518 px, CLIP's and SigLIP's the text tower too).
- ``preprocessing``: a key of :data:`kit.models.backbones.PREPROCESSING`, what the preset's image converter does to
  0-255 RGB (ViT's ImageNet weights and SigLIP: ``x / 127.5 - 1``, "tf"; DINOv2 and Swin: ImageNet mean and std,
  "torch"; CLIP: OpenAI's mean and std, "clip"). kit puts it inside the graph, so the model takes raw pixels.
- ``pooling``: how the image feature is taken from the network's output: ``cls`` (the class token, index 0 of the
  token sequence: ViT, DINOv2, CLIP), ``mean`` (the mean of the tokens: Swin has no class token) or ``pooled`` (the
  network already pools: SigLIP's attention-pooling head).
- ``any_size``: whether the preset's weights load at any ``model.image_size`` (a multiple of ``size_step``): DINOv2
  interpolates its position embeddings. Elsewhere the position embeddings fix the size to the preset's.
- ``unfreeze`` and ``blocks``: phase 2 makes the top ``unfreeze`` units of the backbone trainable, a unit being a
  transformer block where the blocks sit in one layer (``blocks``: that layer's class and the attribute listing its
  blocks), else a top-level layer (CLIP and SigLIP encoders list their blocks at the top; Swin counts stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KAGGLE_SCHEME = "kaggle://"
HUB_EXTRA = "pip install 'kit[hub]' (keras-hub==0.29.1)"


@dataclass(frozen=True)
class HubBackbone:
    """One keras-hub row: the preset, the network kit builds from it, and how kit feeds and pools it."""

    name: str  # kit's model name
    title: str  # how `kit list` groups the rows
    preset: str  # keras-hub's preset name
    handle: str  # the Kaggle Models handle, keras/<model>/keras/<variation>/<version>
    preset_class: str  # the keras_hub.models class the preset's config.json names
    network_class: str  # the keras_hub.models class of the image network kit uses
    native_size: int  # the input size of the preset's weights
    size_step: int  # model.image_size must be a multiple of this (the patch; Swin: patch x window x 8)
    preprocessing: str  # a key of kit.models.backbones.PREPROCESSING
    pooling: str  # cls | mean | pooled
    params: int  # the image network's count_params() at native_size
    unfreeze: int  # phase 2's default: the top units made trainable
    architecture: dict[str, Any] = field(compare=False)  # network_class's arguments besides image_shape
    encoder: str | None = None  # the attribute of the preset_class model holding the image network
    any_size: bool = False  # the weights load at any multiple of patch (position embeddings interpolated)
    blocks: tuple[str, str] | None = None  # (class of the layer holding the transformer blocks, its list attribute)

    @property
    def model_handle(self) -> str:
        """``keras/<model>``: the Kaggle model, without framework, variation and version."""
        return "/".join(self.handle.split("/")[:2])

    @property
    def kernel_folder(self) -> str:
        """The preset folder's path under a kernel's input folder: ``<model>/keras/<variation>/<version>``."""
        return "/".join(self.handle.split("/")[1:])


_VIT_B = {"num_layers": 12, "num_heads": 12, "hidden_dim": 768}
_DINO = {"patch_size": 14, "num_layers": 12, "layer_scale_init_value": 1.0}
_TOWER_B = {"patch_size": 16, "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 3072}

HUB_ROWS: list[HubBackbone] = [
    HubBackbone(
        "vit_b16", "ViT (keras-hub)", "vit_base_patch16_224_imagenet", "keras/vit/keras/vit_base_patch16_224_imagenet/4",
        "ViTBackbone", "ViTBackbone", 224, 16, "tf", "cls", 85_798_656, 4,
        {**_VIT_B, "patch_size": 16, "mlp_dim": 3072}, blocks=("ViTEncoder", "encoder_layers"),
    ),
    HubBackbone(
        "dinov2_small", "DINOv2 (keras-hub)", "dinov2_small", "keras/dinov2/keras/dinov2_small/1",
        "DINOV2Backbone", "DINOV2Backbone", 224, 14, "torch", "cls", 22_155_264, 4,
        {**_DINO, "hidden_dim": 384, "num_heads": 6, "intermediate_dim": 1536}, any_size=True,
        blocks=("DINOV2Encoder", "layers"),
    ),
    HubBackbone(
        "dinov2_base", "DINOv2 (keras-hub)", "dinov2_base", "keras/dinov2/keras/dinov2_base/1",
        "DINOV2Backbone", "DINOV2Backbone", 224, 14, "torch", "cls", 86_777_856, 4,
        {**_DINO, "hidden_dim": 768, "num_heads": 12, "intermediate_dim": 3072}, any_size=True,
        blocks=("DINOV2Encoder", "layers"),
    ),
    HubBackbone(
        "clip_vit_b16", "CLIP (keras-hub)", "clip_vit_base_patch16", "keras/clip/keras/clip_vit_base_patch16/3",
        "CLIPBackbone", "CLIPVisionEncoder", 224, 16, "clip", "cls", 85_799_621, 5,
        {**_TOWER_B, "intermediate_activation": "quick_gelu"}, encoder="vision_encoder",
    ),
    HubBackbone(
        "siglip_b16_224", "SigLIP (keras-hub)", "siglip_base_patch16_224", "keras/siglip/keras/siglip_base_patch16_224/1",
        "SigLIPBackbone", "SigLIPVisionEncoder", 224, 16, "tf", "pooled", 92_884_420, 6,
        {**_TOWER_B, "intermediate_activation": "gelu_approximate", "layer_norm_epsilon": 1e-6}, encoder="vision_encoder",
    ),
    HubBackbone(
        "swin_tiny", "Swin (keras-hub)", "swin_tiny_patch4_window7_224",
        "keras/swin-transformer/keras/swin_tiny_patch4_window7_224/1",
        "SwinTransformerBackbone", "SwinTransformerBackbone", 224, 224, "torch", "mean", 27_519_354, 2,
        {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "patch_size": 4},
    ),
]  # fmt: skip

HUB_BACKBONES: dict[str, HubBackbone] = {row.name: row for row in HUB_ROWS}

# The layers holding a row's transformer blocks, by class name: what phase 2 opens up to count blocks.
BLOCK_LISTS: dict[str, str] = dict(row.blocks for row in HUB_ROWS if row.blocks is not None)


def by_title() -> dict[str, list[HubBackbone]]:
    """The rows grouped by title, in table order (what `kit list` prints)."""
    groups: dict[str, list[HubBackbone]] = {}
    for row in HUB_ROWS:
        groups.setdefault(row.title, []).append(row)
    return groups


def hub_row(model_name: str) -> HubBackbone | None:
    """The hub row named ``model_name``, or None for every other model."""
    return HUB_BACKBONES.get(model_name)
