"""BAM: base and meta learners with a Gram-weighted ensemble (Lang et al., CVPR 2022); declares ``bam``."""

from fsseg_methods.bam.declaration import BAMDeclaration, BAMParams

__all__ = ["BAMDeclaration", "BAMParams"]
