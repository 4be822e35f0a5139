"""variants: make and judge an artifact's variants. Entries: quantize.quantize(), optimize.optimize(),
validate.validate() (gate.judge() is the verdict they share; hardware.preset_for() the CPU's settings).

The entry functions are not re-exported here: each has the name of its module, and a package attribute
would shadow the module (``from toolchain.variants import quantize`` must stay the module)."""
