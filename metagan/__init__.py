"""metagan: few-shot image generation with meta-learned GANs.

Four floors, each a folder, every import pointing down: ``flows/app/`` (the application: the
``metagan`` command, the demo) -> ``flows/`` (thin Prefect glue) -> ``metagan/lifecycle/``
(register, gate, promote, roll back, plan the fleet) -> ``metagan/`` (this library core).

The core knows nothing of Prefect or of the lifecycle: ``metagan.data`` (datasets, shards,
episodes), ``metagan.meta`` (the learners, one module each), ``metagan.train``, ``metagan.adapt``,
``metagan.export``; MLflow and DVC are reached only through ``metagan.store``, ``metagan.tracking``,
``metagan.model_versions``, ``metagan.serving`` and ``metagan.versioning``.
"""

__version__ = "0.1.0"
