"""Train a small ConvNet on scikit-learn's bundled 8x8 digits with fastconv's layers.

    python examples/train_digits.py [--epochs 20] [--seed 0]

The network (NCHW, float32):

    x (N, 1, 8, 8)
    -> Conv2d 1->16, 3x3, pad 1 -> ReLU -> 2x2 max-pool     (N, 16, 4, 4)
    -> Conv2d 16->32, 3x3, pad 1 -> ReLU                     (N, 32, 4, 4)
    -> "fully connected" 32*4*4 -> 10, written as a Conv2d with a 4x4 kernel: (N, 10, 1, 1)
    -> softmax cross-entropy

Convolutions and their backward passes are fastconv's; pooling, ReLU, the loss and
SGD with momentum are plain NumPy. Needs scikit-learn (``pip install ".[examples]"``);
tqdm, when installed and writing to a terminal, draws the progress bar.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastconv


def load(seed: int):
    """The digits, scaled to [0, 1], split 80/20 (stratified) into train and test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return train_test_split(x, digits.target, test_size=0.2, random_state=seed,
                            stratify=digits.target)


class Net:
    """conv -> ReLU -> pool -> conv -> ReLU -> FC-as-conv; forward and backward."""

    def __init__(self, rng):
        self.conv1 = fastconv.Conv2d(1, 16, 3, pad=1, rng=rng)
        self.conv2 = fastconv.Conv2d(16, 32, 3, pad=1, rng=rng)
        self.fc = fastconv.Conv2d(32, 10, 4, rng=rng)  # a dense layer over the 32x4x4 volume
        self.layers = (self.conv1, self.conv2, self.fc)

    def forward(self, x, record=True):
        a1 = np.maximum(self.conv1(x, record=record), 0)            # (N, 16, 8, 8)
        N, C, H, W = a1.shape
        windows = a1.reshape(N, C, H // 2, 2, W // 2, 2)
        p1 = windows.max(axis=(3, 5))                                # (N, 16, 4, 4)
        a2 = np.maximum(self.conv2(p1, record=record), 0)           # (N, 32, 4, 4)
        logits = self.fc(a2, record=record).reshape(N, 10)           # (N, 10, 1, 1) -> (N, 10)
        self._saved = (a1, windows, p1, a2)
        return logits

    def backward(self, grad_logits):
        a1, windows, p1, a2 = self._saved
        N = grad_logits.shape[0]
        g = self.fc.backward(grad_logits.reshape(N, 10, 1, 1))
        g = self.conv2.backward(g * (a2 > 0))
        # Max-pool: the gradient goes to the maximum of each window (ties share it).
        mask = windows == p1[:, :, :, None, :, None]
        g = (mask * g[:, :, :, None, :, None]).reshape(a1.shape)
        self.conv1.backward(g * (a1 > 0))

    def predict(self, x):
        return self.forward(x, record=False).argmax(axis=1)


def softmax_cross_entropy(logits, labels):
    """Mean loss and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels] + 1e-12).mean()
    p[np.arange(n), labels] -= 1
    return float(loss), p / n


def _progress(iterable, total, desc, enabled):
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)
    return iterable


def train(epochs=20, seed=0, batch_size=16, lr=0.05, momentum=0.9, threads=None,
          verbose=True) -> dict:
    """Train and evaluate; returns ``dict(losses=[mean loss per epoch], accuracy=test
    accuracy, seconds=wall time)``.

    ``threads`` defaults to fastconv's thread count. Each convolution here is a few
    hundred kFLOP, below fastconv's grain for a second thread (``threads_for``), so the
    engines run them on one thread either way; before that grain existed, OpenMP meeting
    OpenBLAS's spinning workers made 2 threads 25x slower than 1 here.
    """
    with fastconv.num_threads(threads or fastconv.get_num_threads()):
        return _train(epochs, seed, batch_size, lr, momentum, verbose)


def _train(epochs, seed, batch_size, lr, momentum, verbose) -> dict:
    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load(seed)
    rng = np.random.default_rng(seed)
    net = Net(rng)
    params = [pair for layer in net.layers for pair in layer.parameters()]
    velocity = [np.zeros_like(p) for p, _ in params]
    bar = verbose and sys.stderr.isatty()
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        batches = range(0, len(order), batch_size)
        total = 0.0
        for i in _progress(batches, len(batches), f"epoch {epoch + 1}/{epochs}", bar):
            idx = order[i:i + batch_size]
            for layer in net.layers:
                layer.zero_grad()
            loss, grad = softmax_cross_entropy(net.forward(x_train[idx]), y_train[idx])
            net.backward(grad)
            for (p, g), vel in zip(params, velocity):
                vel *= momentum
                vel -= lr * g
                p += vel
            total += loss * len(idx)
        losses.append(total / len(x_train))
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {losses[-1]:.4f}", flush=True)
    accuracy = float((net.predict(x_test) == y_test).mean())
    seconds = time.perf_counter() - start
    if verbose:
        print(f"test accuracy {accuracy:.2%} on {len(y_test)} held-out digits "
              f"({seconds:.1f} s)")
    return dict(losses=losses, accuracy=accuracy, seconds=seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="thread count (default: fastconv's, i.e. all cores)")
    args = parser.parse_args(argv)
    train(epochs=args.epochs, seed=args.seed, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
