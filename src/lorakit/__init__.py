"""lorakit: the local Kaggle workflow for the AG News LoRA kernel.

The command line (``lorakit``, or ``python -m lorakit``) is a thin layer over the library functions of one
module per command family (:mod:`lorakit.push`, :mod:`lorakit.follow`, :mod:`lorakit.pull`, :mod:`lorakit.submit`,
...), which raise :class:`lorakit.errors.LorakitError` subclasses on user errors; :mod:`lorakit.common` holds the
words they share.
The ``kaggle`` package is imported lazily, on the first call that needs the network.
"""

__version__ = "0.1.0"
