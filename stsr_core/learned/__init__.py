"""Learning from the series itself across scales (preset ``liif``): training pairs made
from the coarse data one level down (pairs.py), a local implicit decoder in 3D + time
(decoder.py), and its training, measured share and error estimate (correction.py)."""
