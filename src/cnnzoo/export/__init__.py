"""Export to deployment formats, each checked against a runtime before it is reported done."""
from .onnx import DEFAULT_OPSET, ExportError, ExportResult, export_onnx

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "export_onnx"]
