"""The shared plumbing every stage runs: errors, atomic writes, gin configuration, registries, provenance, the
experiment matrix of ``params.yaml`` and the stage roots' common steps (``cell``: open a training cell, load and
write model folders). One folder, so a stage declares it as one DVC dependency.

Nothing here imports the stage roots, the CLI or the reports; ``cell`` reaches the data, engine and model packages
(inside its functions) to open a cell.
"""
