"""The application floor: what a user runs, the ``metagan`` command (:mod:`.cli`) and the demo
(:mod:`.demo`), on top of the flows (``flows/``)."""
