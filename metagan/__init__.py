"""metagan: few-shot image generation with meta-learned GANs.

The library knows nothing of Prefect: ``metagan.data`` (datasets, shards, episodes),
``metagan.nets``, ``metagan.meta`` (meta-learners), ``metagan.train``, ``metagan.adapt``,
``metagan.export``; MLflow and DVC are reached only through ``metagan.tracking`` and
``metagan.versioning``.
"""

__version__ = "0.1.0"
