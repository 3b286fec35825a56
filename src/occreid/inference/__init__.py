"""Using a trained model: feature files, folder extraction, gallery index + search, ONNX export."""
