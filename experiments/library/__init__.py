"""The design library's entries: one module per paper, each defining
``DESIGNS: list[experiments.designs.DesignInfo]`` (see :mod:`experiments.designs`)."""
