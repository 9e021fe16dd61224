"""lorakit: the local Kaggle workflow for the AG News LoRA kernel.

The command line (``lorakit``, or ``python -m lorakit``) is a thin layer over the library functions in
:mod:`lorakit.workflow`, which raise :class:`lorakit.errors.LorakitError` subclasses on user errors.
The ``kaggle`` package is imported lazily, on the first call that needs the network.
"""

__version__ = "0.1.0"
