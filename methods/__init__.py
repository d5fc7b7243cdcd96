"""Few-shot segmentation methods; importing this package registers every method below.

Adding a method: create ``methods/<name>/`` with a ``FewShotMethod`` subclass decorated
``@METHODS.register("<name>")`` and add one import line here (see methods/README.md).
"""

from fsseg_methods import colour_floor, dsmfnet, hsnet, panet, pfenet, query_only  # noqa: F401
