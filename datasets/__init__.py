from fsseg_datasets import dlrsd, isaid5i, synthetic  # noqa: F401
