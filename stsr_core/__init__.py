"""stsr_core: spatiotemporal super-resolution of multivariate time-varying volumes with
implicit neural representations (STSR-INR). Pure Python + PyTorch + numpy; no ParaView."""

__version__ = "0.1.0"

from .errors import StsrError  # noqa: E402
from .series import VolumeSeries  # noqa: E402

__all__ = ["StsrError", "VolumeSeries", "__version__"]
