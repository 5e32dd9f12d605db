"""chestdx: COVID-19 / pneumonia / normal diagnosis from chest CT and X-ray, with heat maps.

Research software, not for clinical use.
"""

from chestdx.errors import ChestDxError

__version__ = "0.1.0"
__all__ = ["ChestDxError", "__version__"]
