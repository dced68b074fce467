"""From a part's frames to a verdict: features, the rolling window, decisions."""
from edge_runtime.inspection.settings import InspectionSettings

__all__ = ["InspectionSettings"]
