"""A neural network written from scratch: NumPy on the CPU, CuPy on a GPU.

The modules, one concept each:
    backend      choose NumPy or CuPy (the only module that imports cupy)
    layers       the Layer contract; Dense, Dropout, Flatten
    activations  ReLU, LeakyReLU, Sigmoid, Tanh
    conv         Conv2D (im2col), Reshape
    pool         MaxPool2D
    losses       softmax, fused softmax + cross-entropy
    optim        SGD (momentum, Nesterov), Adam, AdamW; LR schedules
    model        Sequential over a flat parameter buffer; mlp_spec / cnn_spec builders
    train        the fit loop
    augment      random pixel shifts
    serialize    .npz + JSON save / strict load (no pickle)
    data         the idx file format
    atomic       write-then-rename helpers
"""
