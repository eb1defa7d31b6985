"""Masking conventions: how a family turns per-patch noise into a mask.

Both families sort the noise; they differ in which end is masked and in how the masked count is rounded:
- vit-pytorch masks the patches with the SMALLEST noise, `int(ratio * n)` of them;
- facebookresearch/mae (and HuggingFace ViTMAE) KEEP the smallest, `int(n * (1 - ratio))` of them.
The two counts differ whenever ratio * n is not whole: ratio 0.75 of 10 patches masks int(7.5) = 7 in
vit-pytorch and 10 - int(2.5) = 8 in facebookresearch/mae.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class MaskingConvention:
    masks_smallest: bool  # True: the smallest noise is masked; False: the smallest is kept
    rounds_masked: bool  # True: int(ratio * n) masked; False: int(n * (1 - ratio)) kept

    def num_masked(self, masking_ratio, num_patches):
        if self.rounds_masked:
            return int(masking_ratio * num_patches)
        return num_patches - int(num_patches * (1 - masking_ratio))

    def check(self, masking_ratio, num_patches, name='masking_ratio'):
        """The masked count; raises ValueError unless the ratio (the keyword `name`) masks at least one patch and
        keeps at least one."""
        if isinstance(masking_ratio, bool) or not isinstance(masking_ratio, int | float):
            raise TypeError(f'{name} must be a number, got {type(masking_ratio).__name__}')
        if not 0 < masking_ratio < 1:
            raise ValueError(f'{name} must be strictly between 0 and 1, got {masking_ratio}')
        num_masked = self.num_masked(masking_ratio, num_patches)
        if not 0 < num_masked < num_patches:
            raise ValueError(
                f'{name} {masking_ratio} masks {num_masked} of {num_patches} patches: '
                'at least one patch must be masked and one kept'
            )
        return num_masked

    def split(self, sorted_indices, num_masked):
        """Patch indices sorted by noise, (b, n) -> (masked (b, num_masked), unmasked (b, n - num_masked))."""
        if self.masks_smallest:
            return sorted_indices[:, :num_masked], sorted_indices[:, num_masked:]
        num_kept = sorted_indices.shape[1] - num_masked
        return sorted_indices[:, num_kept:], sorted_indices[:, :num_kept]


VIT_PYTORCH = MaskingConvention(masks_smallest=True, rounds_masked=True)
