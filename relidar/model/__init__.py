"""Model layer (PyTorch): sparse-conv layers, the student network, its weights file, the deployed graph and the torch backend."""
