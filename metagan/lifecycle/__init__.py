"""The lifecycle floor: the product's rules on top of the library core (``metagan/``).

Register a customer's adapted model, judge it at the gate, promote it by alias, roll it back
(:mod:`.registry`, :mod:`.gate`); keep the meta-model and the evaluator current (:mod:`.meta_model`);
plan the fleet's work from what changed (:mod:`.fleet`) and repair its index from the registry
(:mod:`.fleet_repair`); report the registry's health (:mod:`.health`). Modules here import the core
and each other, never the flows above them (``tests/test_layers.py`` reads the floors from these
folders).
"""
