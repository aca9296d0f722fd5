"""Self-supervised objectives, one file each: views/masking plus a pure loss function."""

from sslops.objectives.augment import ImageAugment, augment_images, augment_series
from sslops.objectives.draws import Draws
from sslops.objectives.gather import gather_with_grad
from sslops.objectives.mae import mae_loss, random_patch_mask
from sslops.objectives.masked_segment import mask_segments, masked_reconstruction_loss
from sslops.objectives.next_patch import next_patch_loss, next_patch_targets
from sslops.objectives.scarf import corrupt_columns, info_nce, scarf_corrupt
from sslops.objectives.simclr import nt_xent
from sslops.objectives.vicreg import vicreg
from sslops.objectives.vime import changed_columns, vime_loss

__all__ = [
    "Draws",
    "ImageAugment",
    "augment_images",
    "augment_series",
    "changed_columns",
    "corrupt_columns",
    "gather_with_grad",
    "info_nce",
    "mae_loss",
    "mask_segments",
    "masked_reconstruction_loss",
    "next_patch_loss",
    "next_patch_targets",
    "nt_xent",
    "random_patch_mask",
    "scarf_corrupt",
    "vicreg",
    "vime_loss",
]
