"""metagan: few-shot image generation with meta-learned GANs.

Four floors, each a folder, every import pointing down: ``flows/app/`` (the application: the
``metagan`` command, the demo) -> ``flows/`` (thin Prefect glue) -> ``metagan/lifecycle/``
(register, gate, promote, roll back, plan the fleet) -> ``metagan/`` (this library core).

The core knows nothing of Prefect or of the lifecycle: ``metagan.data`` (datasets, shards,
episodes), ``metagan.meta`` (the learners, one module each), ``metagan.train``, ``metagan.adapt``,
``metagan.export``; MLflow and DVC are reached only through ``metagan.store``, ``metagan.tracking``,
``metagan.model_versions``, ``metagan.serving`` and ``metagan.versioning``.
"""

# raised at each release: pip installs no wheel over one of the same version (every build before
# 2026-12-08 was 0.1.0, so `pip install -U` of a newer one said "already installed", exit 0)
__version__ = "0.2.1"
