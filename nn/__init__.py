"""A neural network written from scratch: NumPy on the CPU, CuPy on a GPU.

The modules, one concept each:
    backend      choose NumPy or CuPy (the only module that imports cupy); CUDA graphs, cuBLAS
    layers       the Layer contract; Dense, Dropout, Flatten
    activations  ReLU, LeakyReLU, Sigmoid, Tanh
    conv         Conv2D (im2col), Reshape
    pool         MaxPool2D
    losses       softmax, fused softmax + cross-entropy
    optim        SGD (momentum, Nesterov), Adam, AdamW; LR schedules
    model        Sequential over a flat parameter buffer; mlp_spec / cnn_spec builders
    train        the fit loop
    feed         the run's data on the device, each epoch's randomness, the step counter
    shards       the CPU step in batch shards side by side (the same bits on any core count)
    workers      where shards run: forked worker processes (Linux) or threads
    kernels      fused CUDA kernels for the GPU step (each beside its NumPy twin)
    noise        dropout noise: counter-based Philox, the same bits on CPU and GPU
    augment      random pixel shifts
    serialize    .npz + JSON save / strict load (no pickle)
    data         the idx file format
    atomic       write-then-rename helpers, all or none; stop signals recorded, so that none is lost
"""
