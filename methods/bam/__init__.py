"""BAM: base and meta learners with a Gram-weighted ensemble (Lang et al., CVPR 2022); registers ``bam``."""

from fsseg_methods.bam.model import BAM, BAMParams

__all__ = ["BAM", "BAMParams"]
