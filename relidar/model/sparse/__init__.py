"""Sparse 3D convolution in plain PyTorch ops (gather, matmul, index-add), exportable to ONNX.

``relidar.model.sparse.functional`` holds the stateless operations on (features, pair arrays);
``relidar.model.sparse.modules`` the thin nn.Modules that own the weights and know their resolution level.
"""
