"""The backbone table: one row per pretrained ``keras.applications`` backbone kit can put under its head.

A row says everything kit needs to build, feed, load and fine-tune one backbone (as timm's ``pretrained_cfg``):
the ``keras.applications`` constructor, the native input size, the preprocessing the ImageNet weights expect
(put inside the graph by :mod:`kit.models.pretrained`, so models take raw 0-255 RGB), Keras' ``*_notop.h5``
file name and hash, the feature layer the head pools, how many top layers phase 2 unfreezes, a named fix to run
after loading weights, and the backbone's parameter count. Adding a backbone is one row here; nothing else in kit
names a backbone. What a family shares (download folder, preprocessing, unfreeze count, fix) is written once in
its :class:`Family`, which each of its rows reads through properties.

Where the facts come from (Keras 3.15's own ``applications/<family>.py`` sources, read as text, never imported):

- ``weights_file`` and ``file_hash``: the name ``keras.applications`` gives the notop file in the Keras cache and
  the hash ``keras.utils.get_file`` checks (md5, or sha256 for ConvNeXt; Keras' ``WEIGHTS_HASHES[...][1]`` or the
  ``file_hash=`` of the notop ``get_file`` call). tests/test_backbones.py checks each hash against that source.
- ``preprocessing``: each module's ``preprocess_input`` mode. ResNet is "caffe", ResNetV2/Xception/InceptionV3
  "tf", DenseNet "torch"; EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3 normalise inside themselves
  (their ``preprocess_input`` is the identity), so kit adds nothing ("included").
- ``params``: ``backbone.count_params()`` of the notop backbone, measured once (it does not depend on the input
  size); the parametrized test checks it against the built model, so the column cannot go stale.
- ``unfreeze``: about the last block(s) of the top stage. 20 for EfficientNet as keras-io's fine-tuning example,
  30 for ResNet as kit's resnet50 preset; elsewhere a count that starts on a block boundary in every row of the
  family (ConvNeXt: the whole last stage, 22; EfficientNetV2 and MobileNetV3: the last block and the top, 18;
  InceptionV3: the ``mixed10`` block, 31). BatchNorm stays frozen whatever the count.
- ``stem_stride``: the stride of the family's first strided Conv2D (2; ConvNeXt's 4x4 patchify stem: 4), the layer
  ``model.options.stem_stride`` changes (:func:`kit.models.pretrained.restride_stem`); the parametrized test checks
  it against the built backbone.
- ``feature_layer``: the name of the backbone's output layer; None where Keras leaves that layer unnamed (ConvNeXt's
  final LayerNormalization, MobileNetV3's last activation get counter-numbered names).
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.models.hub_backbones import HUB_BACKBONES

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"

# ImageNet statistics as Keras' applications/imagenet_utils.py uses them.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # "caffe" mode, on the 0-255 scale
# OpenAI CLIP's image statistics (its image processor's image_mean and image_std), what CLIP towers expect.
CLIP_MEAN_RGB = (0.48145466, 0.4578275, 0.40821073)
CLIP_STDDEV_RGB = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocessing:
    """What ``preprocess_input`` does to 0-255 RGB, as ``(x - mean) / std`` on the 0-255 scale after an optional
    channel flip; :func:`kit.models.pretrained.preprocess` builds it from two serializable built-in ops."""

    to_bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Keras' preprocess_input modes. "included": the backbone normalises its own 0-255 input, nothing is added.
PREPROCESSING: dict[str, Preprocessing | None] = {
    "caffe": Preprocessing(True, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)),  # RGB -> BGR, minus the means, no scaling
    "tf": Preprocessing(False, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # x / 127.5 - 1
    "torch": Preprocessing(  # x / 255, then the ImageNet mean and std
        False, tuple(255 * m for m in IMAGENET_MEAN_RGB), tuple(255 * s for s in IMAGENET_STDDEV_RGB)
    ),
    "clip": Preprocessing(  # x / 255, then CLIP's mean and std (keras-hub's CLIP rows)
        False, tuple(255 * m for m in CLIP_MEAN_RGB), tuple(255 * s for s in CLIP_STDDEV_RGB)
    ),
    "included": None,
}


@dataclass(frozen=True)
class Family:
    """What the backbones of one ``keras.applications`` module share."""

    title: str  # how `kit list` groups the rows
    weights_url: str  # the folder Keras downloads the notop files from (its BASE_WEIGHTS_PATH)
    preprocessing: str  # a key of PREPROCESSING
    unfreeze: int  # phase 2's default: the top layers made trainable
    feature_layer: str | None  # the backbone's output layer (None: Keras leaves it unnamed)
    min_size: int = 32  # the smallest input the constructor accepts with include_top=False
    stem_stride: int = 2  # the stride of the first strided Conv2D (the stem): what model.options.stem_stride divides
    post_load: str | None = None  # a fix run after loading weights (a key of kit.models.pretrained.POST_LOAD)


@dataclass(frozen=True)
class Backbone:
    """One row of the table: a family's facts plus the backbone's own."""

    name: str  # kit's model name
    family: Family
    constructor: str  # the keras.applications function
    native_size: int  # the input size the ImageNet weights were trained at
    weights_file: str  # the notop file's name in the Keras cache (<keras home>/models/)
    file_hash: str  # its md5 (32 hex digits) or sha256 (64), as keras.utils.get_file checks it
    params: int  # backbone.count_params() of the notop backbone

    @property
    def weights_url(self) -> str:
        return self.family.weights_url + self.weights_file

    @property
    def preprocessing(self) -> str:
        return self.family.preprocessing

    @property
    def unfreeze(self) -> int:
        return self.family.unfreeze

    @property
    def feature_layer(self) -> str | None:
        return self.family.feature_layer

    @property
    def min_size(self) -> int:
        return self.family.min_size

    @property
    def stem_stride(self) -> int:
        return self.family.stem_stride

    @property
    def post_load(self) -> str | None:
        return self.family.post_load


CONVNEXT = Family("ConvNeXt", KERAS_WEIGHTS + "convnext/", "included", 22, None, stem_stride=4)  # 4x4 patchify stem
EFFICIENTNET = Family(
    "EfficientNet", "https://storage.googleapis.com/keras-applications/", "included", 20, "top_activation",
    post_load="efficientnet_variance",
)  # fmt: skip
EFFICIENTNETV2 = Family("EfficientNetV2", KERAS_WEIGHTS + "efficientnet_v2/", "included", 18, "top_activation")
RESNET = Family("ResNet", KERAS_WEIGHTS + "resnet/", "caffe", 30, "conv5_block3_out")
RESNETV2 = Family("ResNetV2", KERAS_WEIGHTS + "resnet/", "tf", 24, "post_relu")
DENSENET = Family("DenseNet", KERAS_WEIGHTS + "densenet/", "torch", 30, "relu")
XCEPTION = Family("Xception", KERAS_WEIGHTS + "xception/", "tf", 26, "block14_sepconv2_act", min_size=71)
INCEPTION = Family("InceptionV3", KERAS_WEIGHTS + "inception_v3/", "tf", 31, "mixed10", min_size=75)
MOBILENETV3 = Family("MobileNetV3", KERAS_WEIGHTS + "mobilenet_v3/", "included", 18, None)

_TF_KERNELS = "_weights_tf_dim_ordering_tf_kernels_notop.h5"

# family, name, constructor, native size, notop file, its hash, backbone parameters
_ROWS: list[tuple[Family, str, str, int, str, str, int]] = [
    (CONVNEXT, "convnext_tiny", "ConvNeXtTiny", 224, "convnext_tiny_notop.h5",
     "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1", 27_820_128),
    (CONVNEXT, "convnext_small", "ConvNeXtSmall", 224, "convnext_small_notop.h5",
     "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab", 49_454_688),
    (CONVNEXT, "convnext_base", "ConvNeXtBase", 224, "convnext_base_notop.h5",
     "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45", 87_566_464),
    (CONVNEXT, "convnext_large", "ConvNeXtLarge", 224, "convnext_large_notop.h5",
     "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd", 196_230_336),
    (EFFICIENTNET, "effnetb0", "EfficientNetB0", 224, "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d", 4_049_571),
    (EFFICIENTNET, "effnetb1", "EfficientNetB1", 240, "efficientnetb1_notop.h5", "74c4e6b3e1f6a1eea24c589628592432", 6_575_239),
    (EFFICIENTNET, "effnetb2", "EfficientNetB2", 260, "efficientnetb2_notop.h5", "111f8e2ac8aa800a7a99e3239f7bfb39", 7_768_569),
    (EFFICIENTNET, "effnetb3", "EfficientNetB3", 300, "efficientnetb3_notop.h5", "af6d107764bb5b1abb91932881670226", 10_783_535),
    (EFFICIENTNET, "effnetb4", "EfficientNetB4", 380, "efficientnetb4_notop.h5", "ebc24e6d6c33eaebbd558eafbeedf1ba", 17_673_823),
    (EFFICIENTNET, "effnetb5", "EfficientNetB5", 456, "efficientnetb5_notop.h5", "38879255a25d3c92d5e44e04ae6cec6f", 28_513_527),
    (EFFICIENTNET, "effnetb6", "EfficientNetB6", 528, "efficientnetb6_notop.h5", "9ecce42647a20130c1f39a5d4cb75743", 40_960_143),
    (EFFICIENTNET, "effnetb7", "EfficientNetB7", 600, "efficientnetb7_notop.h5", "cbcfe4450ddf6f3ad90b1b398090fe4a", 64_097_687),
    (EFFICIENTNETV2, "effnetv2_b0", "EfficientNetV2B0", 224, "efficientnetv2-b0_notop.h5",
     "893217f2bb855e2983157299931e43ff", 5_919_312),
    (EFFICIENTNETV2, "effnetv2_b1", "EfficientNetV2B1", 240, "efficientnetv2-b1_notop.h5",
     "0e80663031ca32d657f9caa404b6ec37", 6_931_124),
    (EFFICIENTNETV2, "effnetv2_b2", "EfficientNetV2B2", 260, "efficientnetv2-b2_notop.h5",
     "1dfe2e7a5d45b6632553a8961ea609eb", 8_769_374),
    (EFFICIENTNETV2, "effnetv2_b3", "EfficientNetV2B3", 300, "efficientnetv2-b3_notop.h5",
     "f6abf7b5849ac99a89b50dd3fd532856", 12_930_622),
    (EFFICIENTNETV2, "effnetv2_s", "EfficientNetV2S", 384, "efficientnetv2-s_notop.h5",
     "af0682fb74e8c54910f2d4393339c070", 20_331_360),
    (EFFICIENTNETV2, "effnetv2_m", "EfficientNetV2M", 480, "efficientnetv2-m_notop.h5",
     "1b8dc055df72dde80d614482840fe342", 53_150_388),
    (EFFICIENTNETV2, "effnetv2_l", "EfficientNetV2L", 480, "efficientnetv2-l_notop.h5",
     "b0b66b5c863aef5b46e8608fe1711615", 117_746_848),
    (RESNET, "resnet50", "ResNet50", 224, "resnet50" + _TF_KERNELS, "4d473c1dd8becc155b73f8504c6f6626", 23_587_712),
    (RESNET, "resnet101", "ResNet101", 224, "resnet101" + _TF_KERNELS, "88cf7a10940856eca736dc7b7e228a21", 42_658_176),
    (RESNET, "resnet152", "ResNet152", 224, "resnet152" + _TF_KERNELS, "ee4c566cf9a93f14d82f913c2dc6dd0c", 58_370_944),
    (RESNETV2, "resnet50v2", "ResNet50V2", 224, "resnet50v2" + _TF_KERNELS, "fac2f116257151a9d068a22e544a4917", 23_564_800),
    (RESNETV2, "resnet101v2", "ResNet101V2", 224, "resnet101v2" + _TF_KERNELS, "c0ed64b8031c3730f411d2eb4eea35b5", 42_626_560),
    (RESNETV2, "resnet152v2", "ResNet152V2", 224, "resnet152v2" + _TF_KERNELS, "ed17cf2e0169df9d443503ef94b23b33", 58_331_648),
    (DENSENET, "densenet121", "DenseNet121", 224, "densenet121" + _TF_KERNELS, "30ee3e1110167f948a6b9946edeeb738", 7_037_504),
    (DENSENET, "densenet169", "DenseNet169", 224, "densenet169" + _TF_KERNELS, "b8c4d4c20dd625c148057b9ff1c1176b", 12_642_880),
    (DENSENET, "densenet201", "DenseNet201", 224, "densenet201" + _TF_KERNELS, "c13680b51ded0fb44dff2d8f86ac8bb1", 18_321_984),
    (XCEPTION, "xception", "Xception", 299, "xception" + _TF_KERNELS, "b0042744bf5b25fce3cb969f33bebb97", 20_861_480),
    (INCEPTION, "inception_v3", "InceptionV3", 299, "inception_v3" + _TF_KERNELS, "bcbd6486424b2319ff4ef7d526e38f63", 21_802_784),
    (MOBILENETV3, "mobilenetv3_small", "MobileNetV3Small", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
     "d3e8ec802a04aa4fc771ee12a9a9b836", 939_120),
    (MOBILENETV3, "mobilenetv3_large", "MobileNetV3Large", 224, "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
     "07fb09a5933dd0c8eaafa16978110389", 2_996_352),
]  # fmt: skip

BACKBONES: dict[str, Backbone] = {row[1]: Backbone(row[1], row[0], *row[2:]) for row in _ROWS}


def by_family() -> dict[str, list[Backbone]]:
    """The rows grouped by family title, in table order (what `kit list` prints)."""
    groups: dict[str, list[Backbone]] = {}
    for row in BACKBONES.values():
        groups.setdefault(row.family.title, []).append(row)
    return groups


def row_settings(name: str) -> dict | None:
    """The settings a backbone brings by itself, as a partial config (None for a name that is not a row): its
    native size, pretrained weights, and a phase 2 that unfreezes its ``unfreeze`` top layers at a hundredth
    of phase 1's default rate, as kit's effnetb4 and resnet50 presets do (tests/test_backbones.py holds them to it).
    What a model preset YAML of the backbone would hold, for a preset loader that finds no YAML of that name.
    A keras-hub row (:mod:`kit.models.hub_backbones`) brings the same, its weights being its preset."""
    row = BACKBONES.get(name) or HUB_BACKBONES.get(name)
    if row is None:
        return None
    return {
        "model": {"name": row.name, "image_size": row.native_size, "weights": "imagenet" if name in BACKBONES else "preset"},
        "train": {"fine_tune": {"epochs": 5, "learning_rate": 1e-5, "unfreeze": row.unfreeze}},
    }


def row_presets() -> dict[str, dict]:
    """Every row's :func:`row_settings` by name: the model presets of the rows that have no YAML of their own."""
    return {name: settings for name in [*BACKBONES, *HUB_BACKBONES] if (settings := row_settings(name)) is not None}
