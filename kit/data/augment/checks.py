"""The range checks of an :class:`AugmentConfig`, shared by the online and the offline augmenter.

The choices (``library``, ``flip``, ``mode``) are typed in :mod:`kit.config`, which rejects unknown ones;
what is left are the numeric ranges, each message naming the offending value and a fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kit.errors import KitError

if TYPE_CHECKING:
    from kit.config import AugmentConfig


def choice(value: Any) -> str:
    """A config choice as its string, whether config holds an Enum member or the plain string."""
    return str(getattr(value, "value", value))


def check_config(cfg: AugmentConfig) -> None:
    if not 0.0 <= cfg.rotation <= 1.0:
        raise KitError(
            f"augment.rotation={cfg.rotation} is outside [0, 1]", "give a fraction of a full turn, e.g. augment.rotation=0.05"
        )
    if not 0.0 <= cfg.translate <= 0.5:
        raise KitError(
            f"augment.translate={cfg.translate} is outside [0, 0.5]", "give a fraction of the side, e.g. augment.translate=0.125"
        )
    if not 0.0 <= cfg.color_jitter < 1.0:
        raise KitError(f"augment.color_jitter={cfg.color_jitter} is outside [0, 1)", "use e.g. augment.color_jitter=0.2")
    if not 0.0 <= cfg.cutmix <= 1.0:
        raise KitError(f"augment.cutmix={cfg.cutmix} is not a probability", "use e.g. augment.cutmix=0.5 (0 turns CutMix off)")
    if cfg.cutmix > 0 and not cfg.cutmix_alpha > 0:
        raise KitError(
            f"augment.cutmix_alpha={cfg.cutmix_alpha} must be positive", "use augment.cutmix_alpha=1.0 as in the CutMix paper"
        )
    if not 0.0 <= cfg.mixup <= 1.0:
        raise KitError(f"augment.mixup={cfg.mixup} is not a probability", "use e.g. augment.mixup=0.5 (0 turns MixUp off)")
    if cfg.mixup > 0 and not cfg.mixup_alpha > 0:
        raise KitError(
            f"augment.mixup_alpha={cfg.mixup_alpha} must be positive", "use augment.mixup_alpha=0.2 as in the MixUp paper"
        )
