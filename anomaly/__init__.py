"""anomaly: learn a product from good images only, then judge every part.

Importing this package imports neither torch nor the detectors; see
``anomaly.detectors.registry`` to construct a detector by name.
"""

__version__ = "0.1.0"
