from ..blas import load_openblas

load_openblas()  # before mlx is first imported (Linux CPU: ~30x faster matmuls)

from .attention import Attention, KVCache
from .experts import Experts, capacity_for
from .router import Routing, route
from .transformer import MoETransformer, build_model, count_parameters

__all__ = ["Attention", "KVCache", "Experts", "capacity_for", "Routing", "route",
           "MoETransformer", "build_model", "count_parameters"]
